"""Small helpers shared by the bench scripts: timing medians and a printed table."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int = 7, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def print_table(title: str, header: list[str], rows: list[list], as_json: bool = False, extra: dict | None = None) -> None:
    if as_json:
        print(json.dumps({"title": title, "machine": machine(), "header": header, "rows": rows, **(extra or {})}, indent=2))
        return
    cells = [[str(c) for c in header]] + [[f"{c:,.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"## {title}  ({machine()})")
    for i, r in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for k, v in (extra or {}).items():
        print(f"{k}: {v}")
