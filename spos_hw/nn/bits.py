"""Bit widths shared by the space (costs) and the layers. No torch here."""

FULL_PRECISION = 32
"""Bit width that means "not quantized" (BitOps of a float layer count 32 x 32 per MAC)."""
