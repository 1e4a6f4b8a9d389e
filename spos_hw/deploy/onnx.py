"""The one ONNX export path: ``torch.onnx.export(..., dynamo=True)`` + ``onnx.checker`` + atomic write.

The latency profiler exports every block with it and ``spos-hw export`` exports whole subnets
with it, so what is measured is what is deployed. Modules holding quantizing layers
(``spos_hw.quant``) get the quant package's ``custom_translation_table``, so their fake-quant
ops lower to QuantizeLinear/DequantizeLinear; callers never special-case them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from spos_hw.errors import VerificationError
from spos_hw.io import atomic_write_bytes

log = logging.getLogger(__name__)

DEFAULT_OPSET = 21
"""Opset 21: the first with INT4/UINT4 QuantizeLinear/DequantizeLinear (see FACTS.md)."""


def export_onnx(
    module,
    example_inputs: Sequence,
    path: str | os.PathLike | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    check: bool = True,
    dynamic_batch: bool = False,
    metadata: dict[str, str] | None = None,
):
    """Export ``module`` (as it is: call ``.eval()`` first) and return the ``onnx.ModelProto``.

    Args:
        module: a ``torch.nn.Module``; its ``forward`` takes ``example_inputs`` positionally.
        example_inputs: the input tensors; their shapes are baked in (static shapes).
        path: where to write the model (atomically); ``None`` only returns it.
        opset: ONNX opset version.
        input_names, output_names: names of the graph inputs and outputs.
        check: run ``onnx.checker.check_model`` (full check) on the result.
        dynamic_batch: make dimension 0 of every input (and output) a symbolic ``batch``.
        metadata: ``metadata_props`` to record in the model (string keys and values).
    """
    import onnx
    import torch

    with torch.no_grad():
        program = torch.onnx.export(
            module,
            tuple(example_inputs),
            dynamo=True,
            opset_version=opset,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=_batch_dims(example_inputs) if dynamic_batch else None,
            custom_translation_table=translation_table(module, opset),
            verbose=False,
        )
    model = program.model_proto
    if metadata:
        onnx.helper.set_model_props(model, {str(k): str(v) for k, v in metadata.items()})
    if check:
        try:
            onnx.checker.check_model(model, full_check=True)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise VerificationError(f"exported ONNX model of {type(module).__name__} fails onnx.checker: {first}") from None
    if path is not None:
        atomic_write_bytes(path, model.SerializeToString())
        log.debug("wrote %s (opset %d)", path, opset)
    return model


def _batch_dims(example_inputs: Sequence) -> tuple:
    """``dynamic_shapes`` making dim 0 of each input one shared ``batch`` (example batch must be >= 2)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return tuple({0: batch} for _ in example_inputs)


def translation_table(module, opset: int) -> dict | None:
    """The custom-op lowerings ``module`` needs: the quant package's Q/DQ table when it holds quant layers."""
    if not any(type(m).__module__.startswith("spos_hw.quant") for m in module.modules()):
        return None
    from spos_hw.quant.onnx import translation_table as quant_table

    return quant_table(opset)


__all__ = ["DEFAULT_OPSET", "export_onnx", "translation_table"]
