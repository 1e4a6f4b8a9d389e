"""``python -m spos_hw`` (what ``torchrun -m spos_hw`` launches)."""

from spos_hw.cli import main

main()
