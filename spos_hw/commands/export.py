"""``spos-hw export``: a subnet as a verified ONNX file or TensorRT engine, and the TensorRT-readiness check."""

from __future__ import annotations

import sys

import click

from spos_hw.commands.options import emit, json_option, space_option


@click.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="A `spos-hw retrain` checkpoint (model.pt).")
@click.option(
    "--arch",
    "arch_text",
    metavar="ARCH",
    help="Architecture (random-init weights unless --checkpoint): canonical string, JSON, or a .json file.",
)
@space_option(required=False)
@click.option("--format", "fmt", type=click.Choice(["onnx", "trt"]), default="onnx", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Output file (default: beside the checkpoint, or net.onnx / net.engine)."
)
@click.option(
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), help="Default: int8 (Q/DQ) for quantized nets, else fp32."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Static batch (with --dynamic-batch: TensorRT's optimal batch).",
)
@click.option("--dynamic-batch", is_flag=True, help="Symbolic batch dimension instead of a static one.")
@click.option("--opset", type=click.IntRange(min=17), default=21, show_default=True, help="ONNX opset (INT4 weights need >= 21).")
@click.option(
    "--calibrate",
    type=click.IntRange(min=1),
    metavar="N",
    help="Float nets with --precision int8: post-training INT8 calibrated on N training images.",
)
@click.option(
    "--calibration",
    type=click.Choice(["max", "percentile", "entropy"]),
    default="percentile",
    show_default=True,
    help="How --calibrate sets activation ranges.",
)
@click.option("--no-verify", is_flag=True, help="Skip the ONNX Runtime (and TensorRT) parity check.")
@click.option("--fold-bn/--no-fold-bn", default=False, show_default=True, help="Fold BN into quantized convs (Q/DQ exports).")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file (read and updated).")
@click.option(
    "--check-trt",
    "check_trt",
    type=click.Path(dir_okay=False),
    metavar="MODEL.onnx",
    help="Only check an ONNX file for TensorRT readiness.",
)
@click.option(
    "--trt-version",
    default="11",
    show_default=True,
    metavar="V",
    help="TensorRT version --check-trt checks the opset against (10.0, 10.1, 11).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@json_option
def export(
    checkpoint,
    arch_text,
    space_name,
    fmt,
    out,
    precision,
    batch_size,
    dynamic_batch,
    opset,
    calibrate,
    calibration,
    no_verify,
    fold_bn,
    timing_cache,
    check_trt,
    trt_version,
    overwrite,
    progress,
    as_json,
) -> None:
    """Export a retrained checkpoint (or a random-init --arch of a --space) and verify it against torch."""
    from spos_hw.api import ExportConfig
    from spos_hw.api import export as run

    config = ExportConfig(
        checkpoint=checkpoint,
        arch=arch_text,
        space=space_name,
        format=fmt,
        out=out,
        precision=precision,
        batch_size=batch_size,
        dynamic_batch=dynamic_batch,
        opset=opset,
        calibrate=calibrate,
        calibration=calibration,
        verify=not no_verify,
        fold_bn=fold_bn,
        timing_cache=timing_cache,
        overwrite=overwrite,
        check_trt=check_trt,
        trt_version=trt_version,
    )
    result = run(config, progress=progress and not as_json and sys.stderr.isatty())
    if check_trt:
        return _report_trt(result, as_json)
    emit(result, as_json, _summary)


def _summary(d: dict) -> str:
    lines = [
        f"wrote {d['path']} ({d['format']}, {d['precision']}, opset {d['opset']}, batch {d['batch']}, {d['nodes']} nodes, {d['weights']} weights)"
    ]
    if d["format"] == "trt":
        lines.append(f"  onnx: {d['onnx']}  tensorrt {d.get('tensorrt')}")
    if d["verified"]:
        step = f", activation error {d['max_step_error']:.3g} steps" if "max_step_error" in d else ""
        lines.append(
            f"  verified on {d['inputs']}: max |diff| {d['max_abs_diff']:.3g}, top-1 agreement {d['top1_agreement']:.2%}{step} (ORT level {d['ort_level']})"
        )
    else:
        lines.append("  not verified (--no-verify)")
    return "\n".join(lines)


def _report_trt(res: dict, as_json: bool) -> None:
    from spos_hw.errors import VerificationError

    if as_json:
        emit(res, True)
    else:
        for v in res["violations"]:
            click.echo(f"{v['node']}: [{v['rule']}] {v['message']}")
    if not res["ready"]:
        n = len(res["violations"])
        raise VerificationError(
            f"{res['model']} is not TensorRT-ready: {n} violation(s)" + ("" if as_json else " (listed above)")
        )
    if not as_json:
        click.echo(f"{res['model']}: TensorRT-ready for TensorRT {res['trt_version']} (Q/DQ rules, operators, opset)")


COMMANDS = [export]
