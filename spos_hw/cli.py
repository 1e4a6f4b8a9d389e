"""The ``spos-hw`` command line. Commands live in ``spos_hw.commands``; each is thin and calls
one library function. Every ``SposHwError`` (and every click usage error) becomes one line on
stderr and exit code 2. Heavy imports (torch, onnxruntime ...) happen inside the commands.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from spos_hw import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="spos-hw")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Hardware-aware Single Path One-Shot NAS: profile, train, search, retrain, export."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("onnxscript", "onnx_ir", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _register() -> None:
    from spos_hw.commands import core, demo, export, latency, search, train

    for module in (core, latency, train, search, export, demo):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "unknown error"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turn user errors into one line and exit code 2."""
    from spos_hw.errors import SposHwError

    try:
        rv = cli.main(args=argv, prog_name="spos-hw", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {_one_line(exc.format_message())}", err=True)
        sys.exit(2)
    except SposHwError as exc:
        click.echo(f"error: {_one_line(str(exc))}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"error: {_one_line(exc.strerror or str(exc))}{where}", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug, not a user error: still one line unless debugging
        if os.environ.get("SPOS_HW_DEBUG"):
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (set SPOS_HW_DEBUG=1 for the traceback)", err=True
        )
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
