"""Verification of an exported model: ONNX Runtime against the torch model on the same inputs.

Figures (``compare``): ``max_abs_diff`` of the outputs, ``top1_agreement`` (fraction of inputs
whose arg-max class agrees) and, for Q/DQ models, errors in quantization steps. Each per-tensor
activation Q/DQ pair is exposed (its QuantizeLinear input and DequantizeLinear output become
extra outputs of a probe copy of the model) and matched to its torch quantizer through the
exporter's ``name_scopes``:

- ``max_step_error``: each ORT Q/DQ against the torch quantizer applied to the *same* input
  (ORT's own), in steps (with ``qdq_bit_mismatches``: elements whose bits differ). This is
  the error the Q/DQ lowering introduces; it is 0 when the lowering is bit-exact.
- ``end_to_end_max_step_error`` / ``end_to_end_step_error_fraction``: each quantizer's output
  in ORT against torch's on the network input. Float convolutions sum in a different order
  in ORT and torch; an activation at a rounding boundary can flip by one step and the flip
  propagates, so this grows with depth (reported, not a tolerance; top-1 agreement bounds
  its effect on the result).

``check`` applies the tolerances and raises ``VerificationError`` over them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from spos_hw.errors import VerificationError

log = logging.getLogger(__name__)

TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-4, "top1_agreement": 1.0},
    "fp16": {"max_rel_diff": 1e-2, "top1_agreement": 0.99},
    "int8": {"max_step_error": 2.0, "top1_agreement": 0.995},
    "ptq": {"top1_agreement": 0.97},
}
"""fp32 and int8 (Q/DQ) as the issue asks; fp16: diff relative to the largest |logit|; ptq: a
post-training INT8 net against its float source (no trained quantizer to match step by step)."""

ORT_LEVEL = "all"
"""Verification runs ONNX Runtime at ORT_ENABLE_ALL (what a deployment uses)."""


def ort_session(model: bytes, *, level: str = ORT_LEVEL, threads: int = 1):
    """A CPU session as the latency protocol builds them (fixed threads, no spinning) at ``level``."""
    from spos_hw.protocol import ort_session as session

    return session(model, threads=threads, level=level)


def run_batched(session, x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Run ``session`` over ``x`` in chunks of ``batch`` (``None``: all at once); the last chunk is padded."""
    name = session.get_inputs()[0].name
    if batch is None:
        return session.run(None, {name: x})
    outs: list[list[np.ndarray]] = []
    for i in range(0, len(x), batch):
        part = x[i : i + batch]
        n = len(part)
        if n < batch:
            part = np.concatenate([part, np.repeat(part[-1:], batch - n, axis=0)])
        outs.append([o[:n] for o in session.run(None, {name: part})])
    return [np.concatenate(o) for o in zip(*outs)]


def activation_probes(model) -> list[tuple[str, str, float, str | None]]:
    """``(DQ output, torch quantizer path, scale, Q input)`` of every per-tensor activation DequantizeLinear."""
    from spos_hw.deploy.fold import graph_index

    consts, producer, _ = graph_index(model.graph)
    probes = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        scale = consts.get(node.input[1])
        if scale is None or scale.size != 1:
            continue  # per-channel: a weight
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        path = _quantizer_path(scopes)
        if path is not None and ".aq." in f".{path}.":
            src = producer.get(node.input[0])
            src = producer.get(src.input[0]) if src is not None and src.op_type == "Clip" else src
            q_in = src.input[0] if src is not None and src.op_type == "QuantizeLinear" else None
            probes.append((node.output[0], path, float(scale.reshape(())), q_in))
    return probes


def _quantizer_path(scopes: str | None) -> str | None:
    if not scopes:
        return None
    import ast

    try:
        names = ast.literal_eval(scopes)
    except (ValueError, SyntaxError):
        return None
    return names[-2] if len(names) >= 2 else None


def probe_model(model, names: list[str]) -> bytes:
    """A copy of ``model`` whose named tensors are extra graph outputs."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return probe.SerializeToString()


def torch_activations(net, x, paths: set[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The torch outputs and every named quantizer's output (forward hooks) on ``x``."""
    import torch

    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [
        mod.register_forward_hook(lambda m, i, o, name=name: seen.setdefault(name, []).append(o.detach()))
        for name, mod in net.named_modules()
        if name in paths
    ]
    try:
        with torch.no_grad():
            y = net(x)
    finally:
        for h in hooks:
            h.remove()
    return y.float().numpy(), {k: torch.cat(v).float().numpy() for k, v in seen.items() if len(v) == 1}


def compare(net, model, x, *, precision: str, batch: int | None, threads: int = 1, level: str = ORT_LEVEL) -> dict[str, Any]:
    """Run ``model`` (``onnx.ModelProto``) in ORT and ``net`` in torch on ``x``; the parity figures."""

    x = x.float().contiguous()
    xs = x.numpy()
    (ort_out,) = run_batched(ort_session(model.SerializeToString(), level=level, threads=threads), xs, batch)[:1]
    probes = activation_probes(model) if precision == "int8" else []
    chunks = [x[i : i + (batch or len(x))] for i in range(0, len(x), batch or len(x))]
    ref_parts, act_parts = [], []
    for c in chunks:
        y, acts = torch_activations(net, c, {p[1] for p in probes})
        ref_parts.append(y)
        act_parts.append(acts)
    ref = np.concatenate(ref_parts)
    out: dict[str, Any] = {
        "n": int(len(x)),
        "ort_level": level,
        "max_abs_diff": float(np.abs(ort_out.astype(np.float64) - ref).max()),
        "max_abs_logit": float(np.abs(ref).max()),
        "top1_agreement": float((ort_out.argmax(1) == ref.argmax(1)).mean()),
    }
    if probes:
        out.update(_step_errors(net, model, probes, xs, batch, threads, level, act_parts))
    return out


def _step_errors(net, model, probes, xs, batch, threads, level, act_parts) -> dict[str, Any]:
    """End-to-end activation errors in steps, and each Q/DQ's own exactness on ORT's inputs."""
    import torch

    from spos_hw.quant.onnx import bit_mismatches

    names = [p[0] for p in probes] + [p[3] for p in probes if p[3]]
    got = dict(zip(names, run_batched(ort_session(probe_model(model, names), level=level, threads=threads), xs, batch)[1:]))
    modules = dict(net.named_modules())
    steps, frac_num, frac_den, matched, local_steps, local_bits = 0.0, 0, 0, 0, 0.0, 0
    for name, path, scale, q_in in probes:
        if path not in act_parts[0]:
            continue
        ref = np.concatenate([a[path] for a in act_parts])
        ort_act = got[name]
        if ref.shape != ort_act.shape:
            continue
        err = np.abs(ort_act.astype(np.float64) - ref) / scale
        steps = max(steps, float(err.max()))
        frac_num += int((err >= 0.5).sum())
        frac_den += err.size
        matched += 1
        if q_in is not None and path in modules:
            with torch.no_grad():
                mine = modules[path](torch.from_numpy(np.ascontiguousarray(got[q_in]))).numpy()
            local_bits += bit_mismatches(mine, ort_act)
            local_steps = max(local_steps, float(np.abs(mine.astype(np.float64) - ort_act).max() / scale))
    if matched == 0:
        raise VerificationError("no activation quantizer of the exported model could be matched to the torch model")
    return {
        "max_step_error": local_steps,
        "qdq_bit_mismatches": local_bits,
        "end_to_end_max_step_error": steps,
        "end_to_end_step_error_fraction": frac_num / max(frac_den, 1),
        "quantizers_checked": matched,
    }


def check(figures: dict[str, Any], precision: str) -> None:
    """Raise ``VerificationError`` (one line) when ``figures`` exceed the tolerances of ``precision``."""
    tol = TOLERANCES[precision]
    bad = []
    if "max_abs_diff" in tol and figures["max_abs_diff"] > tol["max_abs_diff"]:
        bad.append(f"max abs diff {figures['max_abs_diff']:.3g} > {tol['max_abs_diff']:g}")
    if "max_rel_diff" in tol:
        rel = figures["max_abs_diff"] / max(figures["max_abs_logit"], 1e-12)
        if rel > tol["max_rel_diff"]:
            bad.append(f"max diff {rel:.3g} of the largest logit > {tol['max_rel_diff']:g}")
    if "max_step_error" in tol and figures.get("max_step_error", 0.0) > tol["max_step_error"]:
        bad.append(f"Q/DQ error {figures['max_step_error']:.3g} quantization steps > {tol['max_step_error']:g}")
    if figures["top1_agreement"] < tol["top1_agreement"]:
        bad.append(f"top-1 agreement {figures['top1_agreement']:.2%} < {tol['top1_agreement']:.1%}")
    if bad:
        raise VerificationError(
            f"exported model does not match torch on {figures['n']} inputs (ORT level {figures['ort_level']}): " + "; ".join(bad)
        )


__all__ = ["ORT_LEVEL", "TOLERANCES", "activation_probes", "check", "compare", "ort_session", "run_batched"]
