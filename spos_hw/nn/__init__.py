"""Layers the networks are built from: a leaf package (it imports nothing else of spos_hw).

- ``layers``: channel-sliceable conv / BN / linear, each taking ``bits`` at forward time.
- ``factory``: the ``Layers`` bundle of factories and a registry of layer kinds (``float``, and
  ``quant``, found by import path, so this package never imports its consumers).
- ``bits``: the bit width that means "not quantized".

Importing the package is cheap and torch-free; the torch modules load with ``layers``.
"""
