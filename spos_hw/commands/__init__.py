"""Click commands, one module per area; ``spos_hw.cli`` registers each module's ``COMMANDS``."""
