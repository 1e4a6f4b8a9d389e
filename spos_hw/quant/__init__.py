"""Quantization: the fake-quant op and its kernels, quantizing layers, and the Q/DQ lowering.

Imported only by quantized spaces (``nas.layers.layers_for``); float paths never load it.
"""
