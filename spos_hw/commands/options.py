"""Options and helpers shared by every command (defined once, reused)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def space_option(required: bool = True, default: str | None = None) -> Callable:
    extra = {"default": default} if default is not None else {"required": required}
    return click.option(
        "--space",
        "space_name",
        **extra,
        metavar="SPACE",
        help="Search space name (see `spos-hw spaces`), NAME:classes=N,channels=N,size=N, or a space .json file.",
    )


def load_space(name: str):
    from spos_hw.nas.spaces import get_space

    return get_space(name)


def parse_arch(space, text: str):
    """An ARCH argument: the canonical string, inline JSON, or a .json file (an arch or a result.json)."""
    from spos_hw.errors import ArchError

    text = text.strip()
    if text.endswith(".json") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise ArchError(f"architecture file {text!r} does not exist")
        try:
            obj: Any = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchError(f"architecture file {text!r} is not valid JSON: {exc}") from None
    elif text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"architecture JSON is malformed: {exc}") from None
    else:
        return space.arch(text)
    if isinstance(obj, dict) and "arch" in obj:  # result.json, summary.json or an info --json dump
        obj = obj["arch_json"] if isinstance(obj.get("arch_json"), dict) else obj["arch"]
    if not isinstance(obj, (dict, str)):
        raise ArchError("architecture JSON must be an object like {\"op\": [...]} or a string")
    return space.arch(obj)


def emit(obj: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """Print ``obj`` as JSON or through ``text``."""
    if as_json:
        click.echo(json.dumps(obj, indent=2))
    else:
        click.echo(text(obj) if text else json.dumps(obj, indent=2))
