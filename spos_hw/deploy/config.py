"""``ExportConfig``: what ``spos-hw export`` (and ``spos_hw.export``) is asked to do, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spos_hw.errors import ConfigError

FORMATS = ("onnx", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_OPSET = 21
"""Opset 21: the first with INT4/UINT4 QuantizeLinear/DequantizeLinear (see FACTS.md)."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """One subnet as a verified ONNX file or TensorRT engine, or (``check_trt``) a readiness check.

    The net is a retrained ``checkpoint``, or a random-init ``arch`` of ``space``; with a checkpoint,
    a given ``arch``/``space`` must match it.
    """

    checkpoint: str | None = None  # a `spos-hw retrain` checkpoint (model.pt)
    arch: Any = None  # an Arch, or its text: canonical string, JSON, or a .json file
    space: Any = None  # a SearchSpace or its name (needed to parse `arch` without a checkpoint)
    format: str = "onnx"  # onnx | trt (a TensorRT engine; its ONNX goes beside it as <out>.onnx)
    out: str | None = None  # output file; default: beside the checkpoint, or net.onnx / net.engine
    precision: str | None = None  # fp32 | fp16 | int8; None: int8 (Q/DQ) for quantized nets, else fp32
    batch_size: int = 1  # static batch (with dynamic_batch: TensorRT's optimal batch)
    dynamic_batch: bool = False  # a symbolic batch dimension instead of a static one
    opset: int = DEFAULT_OPSET  # ONNX opset (INT4 weights need >= 21)
    verify: bool = True  # compare ONNX Runtime (and TensorRT) with torch; fail over tolerance
    fold_bn: bool = False  # fold BN into quantized convs of Q/DQ exports (parity does not hold on x86 ORT)
    timing_cache: str | None = None  # TensorRT timing cache file (read and updated)
    overwrite: bool = False  # replace an existing `out`
    check_trt: str | None = None  # only check this ONNX file against TensorRT's rules
    calibrate: int | None = None  # float nets, precision int8: post-training INT8 calibrated on this many training images
    calibration: str = "percentile"  # max | percentile (99.99%) | entropy: how activation ranges are calibrated
    trt_version: str = "11"  # the TensorRT version --check-trt checks the opset against (10.0, 10.1, 11)

    def __post_init__(self) -> None:
        if self.check_trt is not None:
            if self.checkpoint or self.arch is not None:
                raise ConfigError("--check-trt MODEL.onnx takes no --checkpoint or --arch")
            from spos_hw.deploy.trt_check import trt_opset_range

            trt_opset_range(self.trt_version)
            return
        if not self.checkpoint and (self.arch is None or self.space is None):
            if self.arch is not None:
                raise ConfigError("--arch needs --space (to parse it)")
            raise ConfigError("export needs --checkpoint model.pt, or --arch ARCH with --space S (or --check-trt model.onnx)")
        if self.arch is not None and self.space is None:
            raise ConfigError("--arch needs --space (to parse it)")
        if self.format not in FORMATS:
            raise ConfigError(f"unknown export format {self.format!r}; choose from {', '.join(FORMATS)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"--batch-size must be an integer >= 1, got {self.batch_size!r}")
        if self.calibrate is not None:
            if isinstance(self.calibrate, bool) or not isinstance(self.calibrate, int) or self.calibrate < 1:
                raise ConfigError(f"--calibrate must be an integer >= 1 (training images), got {self.calibrate!r}")
            if self.precision != "int8":
                raise ConfigError("--calibrate N is post-training INT8 quantization: give it with --precision int8")
        from spos_hw.deploy.ptq import check_method

        check_method(self.calibration)
        if not isinstance(self.opset, int) or self.opset < 17:
            raise ConfigError(f"--opset must be an integer >= 17, got {self.opset!r}")
        suffix = ".engine" if self.format == "trt" else ".onnx"
        out = (
            Path(self.out) if self.out else Path(self.checkpoint).with_suffix(suffix) if self.checkpoint else Path("net" + suffix)
        )
        if self.format == "trt" and out.suffix == ".onnx":
            raise ConfigError(f"--format trt writes an engine; give --out a name like {out.with_suffix('.engine').name}")
        object.__setattr__(self, "out", str(out))

    @property
    def onnx_out(self) -> Path:
        """Where the ONNX file goes: ``out`` itself, or ``<out>.onnx`` beside a TensorRT engine."""
        out = Path(self.out)
        return out.with_name(out.name + ".onnx") if self.format == "trt" else out


__all__ = ["DEFAULT_OPSET", "FORMATS", "PRECISIONS", "ExportConfig"]
