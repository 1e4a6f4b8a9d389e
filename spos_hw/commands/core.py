"""``spos-hw spaces`` and ``spos-hw info``."""

from __future__ import annotations

import click

from spos_hw.commands.options import emit, json_option, space_option


@click.command()
@json_option
def spaces(as_json: bool) -> None:
    """List the registered search spaces."""
    from spos_hw.nas.spaces import get_space, list_spaces

    rows = [get_space(name).describe() for name in list_spaces()]

    def text(rows):
        lines = [f"{'space':28s} {'blocks':>6s}  {'choices/block':22s} {'input':12s} {'FLOPs (M)':>16s}"]
        for r in rows:
            dims = " x ".join(f"{len(r['options'][d])} {d}" for d in r["dims"])
            lo, hi = r["flops_range"]
            shape = "x".join(map(str, r["input_shape"]))
            lines.append(f"{r['name']:28s} {r['num_blocks']:6d}  {dims:22s} {shape:12s} {lo / 1e6:7.1f}..{hi / 1e6:7.1f}")
        return "\n".join(lines)

    emit(rows, as_json, text)


@click.command()
@click.argument("arch")
@space_option()
@click.option("--lut", type=click.Path(dir_okay=False), default=None, help="Latency table (spos-hw profile): adds latency_ms.")
@json_option
def info(arch: str, space_name: str, lut: str | None, as_json: bool) -> None:
    """Costs of one architecture: FLOPs, params (and BitOps for quantized spaces).

    ARCH is the canonical string (e.g. 2,1,0,...), inline JSON, or a .json file.
    With --lut, the calibrated predicted latency of the table's runtime and batch size.
    """
    from spos_hw.api import info as describe

    summary = describe(arch, space_name, lut=lut)

    def text(s):
        lines = [
            f"space: {s['space']} ({s['fingerprint']})",
            f"arch: {s['arch']}",
            f"flops: {s['flops']:,}",
            f"params: {s['params']:,}",
        ]
        for key in ("bitops", "latency_ms"):
            if key in s:
                lines.append(f"{key}: {s[key]:,}" if isinstance(s[key], int) else f"{key}: {s[key]:.4f}")
        if "lut" in s:
            r, noise = s["lut"]["random_arch_latency"], s["lut"]["noise_floor_pct"]
            lines.append(
                f"random architectures: p5 {r['p5_ms']:.4f} .. p95 {r['p95_ms']:.4f} ms (spread {r['spread_pct']:.1f} %)"
                + (f", noise floor {noise:.2f} %" if noise is not None else "")
            )
        lines.append(
            "blocks: "
            + " ".join(f"{b['op']}/{b['mid']}" + (f"/w{b['wbits']}a{b['abits']}" if "wbits" in b else "") for b in s["blocks"])
        )
        return "\n".join(lines)

    emit(summary, as_json, text)


COMMANDS = [spaces, info]
