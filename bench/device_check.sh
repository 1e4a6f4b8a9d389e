#!/usr/bin/env bash
# One prepared GPU check (<= 8 minutes on one GPU): the gpu/trt tests, the Triton fake-quant
# kernels' GB/s against copy bandwidth and torch, a CUDA latency profile + validate-lut (torch
# CUDA; ORT CUDA EP where onnxruntime has it), and a TensorRT engine build + parity where
# `tensorrt` imports. Writes OUT/device_check.json and OUT/device_check.md (one table).
#
#     bash bench/device_check.sh [OUT]        (default OUT: runs/device-check; $PYTHON overrides python)
#
# On a machine without CUDA it writes both files saying so and exits 0 (nothing is run).
# Every step has its own time limit; a failed or timed-out step is recorded, the rest still run.
set -u -o pipefail

OUT="${1:-runs/device-check}"
PY="${PYTHON:-python}"
SPOS=("$PY" -m spos_hw)
mkdir -p "$OUT/steps"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
START=$(date +%s)

record() { # name rc seconds note json-file
    "$PY" - "$OUT/steps/$1.json" "$1" "$2" "$3" "$4" "${5:-}" <<'EOF'
import json, sys, pathlib
path, name, rc, secs, note, data = sys.argv[1:7]
payload = None
if data and pathlib.Path(data).is_file():
    text = pathlib.Path(data).read_text()
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        payload = {"tail": text[-2000:]}
status = {"0": "ok", "124": "timeout", "137": "timeout", "skip": "skipped"}.get(rc, "failed")
pathlib.Path(path).write_text(json.dumps({"step": name, "status": status, "rc": rc, "seconds": float(secs), "note": note, "data": payload}))
EOF
}

step() { # name limit_s command... : stdout -> steps/name.out
    local name="$1" limit="$2"
    shift 2
    local t0=$(date +%s)
    timeout -k 5 "$limit" "$@" >"$OUT/steps/$name.out" 2>"$OUT/steps/$name.err"
    local rc=$?
    record "$name" "$rc" "$(($(date +%s) - t0))" "$(tail -n 1 "$OUT/steps/$name.err" | cut -c1-200)" "$OUT/steps/$name.out"
}

finish() {
    "$PY" - "$OUT" "$(($(date +%s) - START))" <<'EOF'
import json, sys, pathlib
out, wall = pathlib.Path(sys.argv[1]), float(sys.argv[2])
steps = [json.loads(p.read_text()) for p in sorted((out / "steps").glob("*.json"), key=lambda p: p.stat().st_mtime)]
info = next((s["data"] for s in steps if s["step"] == "device"), None)
result = {"wall_s": wall, "device": info, "steps": steps}
(out / "device_check.json").write_text(json.dumps(result, indent=2))
lines = ["| step | status | seconds | figure |", "|---|---|---|---|"]
for s in steps:
    d, fig = s.get("data") or {}, ""
    if s["step"] == "tests" and isinstance(d, dict):
        fig = d.get("tail", "").strip().splitlines()[-1] if d.get("tail") else ""
    elif s["step"] == "triton_fq" and isinstance(d, dict) and "rows" in d:
        fig = "; ".join(" ".join(str(c) for c in r[:6]) for r in d["rows"][:3])
    elif s["step"].startswith("validate") and isinstance(d, dict):
        fig = ", ".join(f"{k} {d[k]:.3g}" for k in ("mape", "kendall_tau", "spearman") if isinstance(d.get(k), (int, float)))
    elif s["step"].startswith("trt") and isinstance(d, dict):
        fig = ", ".join(f"{k} {d[k]}" for k in ("trt_verified", "trt_top1_agreement", "trt_max_abs_diff", "engine_bytes") if k in d)
    elif s["step"] == "device" and isinstance(d, dict):
        fig = ", ".join(f"{k} {v}" for k, v in d.items())
    lines.append(f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {fig or s.get('note', '')} |")
lines.append(f"\ntotal wall: {wall:.0f} s")
(out / "device_check.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
}

# --- the device, or a clean skip
"$PY" - >"$OUT/steps/device.out" 2>"$OUT/steps/device.err" <<'EOF'
import json, importlib.util
import torch
d = {"cuda": torch.cuda.is_available(), "torch": torch.__version__}
if d["cuda"]:
    d["name"] = torch.cuda.get_device_name(0)
try:
    import onnxruntime as ort
    d["ort"] = ort.__version__
    d["ort_cuda_ep"] = "CUDAExecutionProvider" in ort.get_available_providers()
except ImportError:
    d["ort"], d["ort_cuda_ep"] = None, False
d["tensorrt"] = importlib.util.find_spec("tensorrt") is not None
d["triton"] = importlib.util.find_spec("triton") is not None
print(json.dumps(d))
EOF
record device "$?" 0 "" "$OUT/steps/device.out"
CUDA=$("$PY" -c "import json,sys; print(int(json.load(open(sys.argv[1]))['cuda']))" "$OUT/steps/device.out" 2>/dev/null || echo 0)
if [ "$CUDA" != "1" ]; then
    record gpu_steps skip 0 "no CUDA device: nothing run"
    finish
    exit 0
fi
info() { "$PY" -c "import json,sys; print(int(bool(json.load(open(sys.argv[1])).get(sys.argv[2]))))" "$OUT/steps/device.out" "$1"; }

# --- 1. the gpu and trt tests (junit summary in the .out)
step tests 180 "$PY" -m pytest -q -m "gpu or trt" tests -p no:cacheprovider

# --- 2. Triton fake-quant GB/s vs copy and vs torch's op
step triton_fq 60 "$PY" bench/quant_cuda_kernel.py --n 33554432 --repeats 10 --json

# --- 3. CUDA latency profile + validate-lut (torch CUDA; ORT CUDA EP where present)
SPACE=shufflenetv2-small
step profile_torch_cuda 100 "${SPOS[@]}" profile --space "$SPACE" --device cuda --runtime torch --calibrate 4 \
    --rounds 5 --repeats 5 --warmup 5 --out "$OUT/lut_torch_cuda.json" --overwrite --json
step validate_torch_cuda 60 "${SPOS[@]}" validate-lut "$OUT/lut_torch_cuda.json" --samples 8 --json
if [ "$(info ort_cuda_ep)" = "1" ]; then
    step profile_ort_cuda 100 "${SPOS[@]}" profile --space "$SPACE" --device cuda --runtime onnxruntime --calibrate 4 \
        --rounds 5 --repeats 5 --warmup 5 --out "$OUT/lut_ort_cuda.json" --overwrite --json
    step validate_ort_cuda 60 "${SPOS[@]}" validate-lut "$OUT/lut_ort_cuda.json" --samples 8 --compose --json
else
    record profile_ort_cuda skip 0 "onnxruntime has no CUDAExecutionProvider here (onnxruntime-gpu not installed)"
fi

# --- 4. TensorRT engine build + parity against ORT
if [ "$(info tensorrt)" = "1" ]; then
    ARCH=$("$PY" -c "import numpy as np; from spos_hw.nas.spaces import get_space; print(get_space('shufflenetv2-small-w48a8-trt').random_arch(np.random.default_rng(0)))")
    step trt_int8 120 "${SPOS[@]}" export --space shufflenetv2-small-w48a8-trt --arch "$ARCH" --format trt \
        --out "$OUT/int8.engine" --overwrite --batch-size 8 --json --no-progress
    FARCH=$("$PY" -c "import numpy as np; from spos_hw.nas.spaces import get_space; print(get_space('$SPACE').random_arch(np.random.default_rng(0)))")
    step trt_fp16 90 "${SPOS[@]}" export --space "$SPACE" --arch "$FARCH" --format trt --precision fp16 \
        --out "$OUT/fp16.engine" --overwrite --batch-size 8 --json --no-progress
else
    record trt skip 0 "tensorrt does not import here"
fi
finish
