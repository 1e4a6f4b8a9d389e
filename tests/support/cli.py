"""Running the CLI in-process, and what a user error must look like."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def invoke(capsys, *args) -> CliResult:
    """Run ``spos-hw ARGS`` in-process through the real entry point (error handling included)."""
    from spos_hw.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return CliResult(0 if code is None else int(code), out, err)


def assert_user_error(res: CliResult, *needles: str) -> None:
    """Exit 2, exactly one line on stderr, no traceback, mentioning every needle."""
    assert res.code == 2, (res.code, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert "Traceback" not in res.err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def as_seen(res: CliResult) -> CliResult:
    """stderr as a terminal shows it: a progress bar that cleared itself (``\\r``) leaves nothing."""
    seen = "\n".join(line.split("\r")[-1] for line in res.err.split("\n"))
    return CliResult(res.code, res.out, seen)
