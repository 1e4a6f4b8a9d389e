"""``spos-hw export``: a subnet as a deployable file (ONNX for now; the export issue adds more)."""

from __future__ import annotations

import click

from spos_hw.commands.options import emit, json_option, load_space, parse_arch, space_option


@click.command()
@click.option("--arch", "arch_text", required=True, metavar="ARCH", help="Architecture: canonical string, JSON, or a .json file.")
@space_option()
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output file (net.onnx).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--opset", type=click.IntRange(min=17), default=None, help="ONNX opset (default 21).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@json_option
def export(arch_text, space_name, fmt, out, batch_size, opset, overwrite, as_json) -> None:
    """Export a subnet (random-init weights) so its real latency can be measured with any tool."""
    from spos_hw.export.onnx import DEFAULT_OPSET, export_onnx
    from spos_hw.io import check_new_output

    space = load_space(space_name)
    arch = parse_arch(space, arch_text)
    check_new_output(out, overwrite=overwrite)

    import torch

    from spos_hw.nas.supernet import SubNet

    net = SubNet(space, arch).eval()
    x = torch.randn(batch_size, *space.input_shape, generator=torch.Generator().manual_seed(0))
    model = export_onnx(net, (x,), out, opset=opset or DEFAULT_OPSET)
    info = {
        "out": str(out),
        "format": fmt,
        "space": space.name,
        "fingerprint": space.fingerprint,
        "arch": str(arch),
        "weights": "random init",
        "opset": opset or DEFAULT_OPSET,
        "input": {"name": "input", "shape": [batch_size, *space.input_shape]},
        "nodes": len(model.graph.node),
    }
    emit(info, as_json, lambda d: f"wrote {d['out']} ({d['format']}, opset {d['opset']}, {d['nodes']} nodes, {d['weights']} weights)")


COMMANDS = [export]
