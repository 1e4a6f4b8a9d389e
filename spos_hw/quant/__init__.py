"""Quantization: the fake-quant op and its kernels, quantizing layers, and the Q/DQ lowering.

Imported only by quantized spaces (``nn.factory.layers_for`` resolves ``quant_layers`` by name); float paths never load it.
"""
