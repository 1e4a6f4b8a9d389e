"""Options and helpers shared by every command (defined once, reused)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads [torch's default].")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")


def space_option(required: bool = True, default: str | None = None) -> Callable:
    extra = {"default": default} if default is not None else {"required": required}
    return click.option(
        "--space",
        "space_name",
        **extra,
        metavar="SPACE",
        help="Search space name (see `spos-hw spaces`), NAME:classes=N,channels=N,size=N, or a space .json file.",
    )


def main_process() -> bool:
    """Only rank 0 of a torchrun job prints results."""
    from spos_hw.nas.distributed import is_main_process

    return is_main_process()


def emit(obj: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """Print ``obj`` as JSON or through ``text``."""
    if as_json:
        click.echo(json.dumps(obj, indent=2))
    else:
        click.echo(text(obj) if text else json.dumps(obj, indent=2))
