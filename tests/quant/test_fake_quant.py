"""The fake-quant op: formula, errors, autograd, torch.compile, and the CPU kernel's bit-exactness."""

from __future__ import annotations

import logging

import pytest
import torch

from spos_hw.errors import QuantError, RuntimeUnavailable
from spos_hw.quant import kernels
from spos_hw.quant.fake_quant import (
    fake_quant,
    fake_quant_op,
    grad_scale,
    lsq_grad_factor,
    quant_range,
    reference_backward,
    reference_forward,
)
from spos_hw.quant.kernels import cpu


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of elements whose float32 bit patterns differ (NaN payloads aside)."""
    a, b = a.float().contiguous(), b.float().contiguous()
    return int(((a.view(torch.int32) != b.view(torch.int32)) & ~(a.isnan() & b.isnan())).sum())


@pytest.fixture
def native(monkeypatch):
    """Require the compiled CPU kernel (fail rather than silently test the reference)."""
    monkeypatch.setenv(kernels.ENV, "native")
    assert cpu.library() is not None


# ----------------------------------------------------------------------------- formula


def test_formula_by_hand():
    s = torch.tensor(0.5)
    x = torch.tensor([0.25, 0.75, -0.25, -0.75, 1.24, 100.0, -100.0, -0.1, float("inf"), float("-inf")])
    # x / s = 0.5, 1.5, -0.5, -1.5 (ties go to even), 2.48, clipped, clipped, -0.2 (rounds to -0 -> +0)
    y = fake_quant(x, s, bits=3, signed=True)
    expect = torch.tensor([0.0, 1.0, 0.0, -1.0, 1.0, 1.5, -2.0, 0.0, 1.5, -2.0])
    assert bits_equal(y, expect) == 0  # also checks +0.0, never -0.0 (ONNX dequantizes integer 0 to +0)
    y = fake_quant(x, s, bits=2, signed=False)
    assert y.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 1.5, 0.0, 0.0, 1.5, 0.0]
    assert fake_quant(torch.tensor([0.3, -0.3, 0.0, -0.0]), s, bits=1, signed=True).tolist() == [0.5, -0.5, 0.5, 0.5]
    assert torch.isnan(fake_quant(torch.tensor([float("nan")]), s, bits=4, signed=True)).all()


def test_true_division_not_reciprocal():
    """x / s and x * (1 / s) round differently for some x; the op must follow ONNX (division)."""
    s = torch.tensor(0.1)
    x = torch.arange(-1000, 1000, dtype=torch.float32) * 0.1 + 0.05
    by_div = torch.clamp(torch.round(x / s) + 0.0, -128, 127) * s  # + zero point turns -0 into +0
    by_mul = torch.clamp(torch.round(x * (1 / s)), -128, 127) * s
    assert bits_equal(by_div, by_mul) > 0, "test data must separate the two"
    assert bits_equal(fake_quant(x, s, bits=8, signed=True), by_div) == 0


def test_zero_point_and_ranges():
    assert quant_range(4, True) == (-8, 7) and quant_range(4, False) == (0, 15) and quant_range(1, False) == (0, 1)
    x = torch.linspace(-3, 3, 101)
    y = fake_quant_op(x, torch.tensor(0.1), 0, 15, 5, None)
    assert bits_equal(y, reference_forward(x, torch.tensor(0.1), 0, 15, 5, None)) == 0
    assert y.min().item() == pytest.approx(-0.5) and y.max().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda x: fake_quant(x, torch.tensor(0.0), bits=4, signed=True), "scale must be finite and > 0, got 0.0"),
        (lambda x: fake_quant(x, torch.tensor(-1.0), bits=4, signed=True), "got -1.0"),
        (lambda x: fake_quant(x, torch.tensor(float("nan")), bits=4, signed=True), "got nan"),
        (lambda x: fake_quant(x, torch.tensor([1.0, float("inf")]), bits=4, signed=True, axis=0), "got inf"),
        (lambda x: fake_quant(x, torch.tensor(1.0), bits=9, signed=True), "bit width 9 is not supported"),
        (lambda x: fake_quant(x, torch.tensor(1.0), bits=0, signed=False), "bit width 0"),
        (lambda x: fake_quant(x, torch.tensor(1.0), bits=32, signed=False), "32 means no quantization"),
        (lambda x: fake_quant(x, torch.tensor(1.0), bits=True, signed=False), "bit width True"),
        (lambda x: fake_quant(x, torch.ones(3), bits=4, signed=True, axis=0), "needs shape [2]"),
        (lambda x: fake_quant(x, torch.ones(2), bits=4, signed=True), "per-tensor scale has one element"),
        (lambda x: fake_quant(x, torch.ones(2), bits=4, signed=True, axis=5), "axis 5 is out of range"),
        (lambda x: fake_quant(x.double(), torch.tensor(1.0), bits=4, signed=True), "dtype torch.float64"),
        (lambda x: fake_quant(x, torch.tensor(1.0, dtype=torch.float64), bits=4, signed=True), "scale must be float32"),
        (lambda x: fake_quant_op(x, torch.tensor(1.0), -8, 200, 0, None), "does not fit 8 bits"),
        (lambda x: fake_quant(x, torch.tensor(1.0, device="meta"), bits=4, signed=True), "scale is on meta"),
        (lambda x: fake_quant_op(x, torch.tensor(1.0), 0, 15, 16, None), "zero point 16"),
    ],
)
def test_bad_arguments_are_one_line_errors(call, needle):
    with pytest.raises(QuantError) as exc:
        call(torch.randn(2, 3))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- CPU kernel


def _inputs(shape, scale_shape, seed=0, memory_format=torch.contiguous_format):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(scale_shape, generator=g) * 0.2 + 0.01
    x = torch.randn(shape, generator=g) * 4 * s.max()
    x.view(-1)[:50] = (torch.arange(50) - 25 + 0.5) * 0.0625  # exact ties with a power-of-two scale below
    if x.dim() == 4:
        x = x.contiguous(memory_format=memory_format)
    return x, s


CASES = [
    # (shape, axis, bits, signed, note)
    ((3, 5, 7), None, 8, True, "small, odd size"),
    ((2, 16, 64, 64), None, 4, False, "several chunks"),
    ((16, 8, 3, 3), 0, 3, True, "per channel"),
    ((16, 8, 3, 3), 1, 2, True, "per channel, inner axis"),
    ((100, 37), 0, 5, True, "linear weight"),
]


LAYOUT_CASES = [
    (*c, layout)
    for c in CASES
    for layout in ("contiguous", "channels_last", "sliced")
    if layout != "channels_last" or len(c[0]) == 4
]


@pytest.mark.parametrize("shape, axis, bits, signed, note, layout", LAYOUT_CASES)
def test_cpu_kernel_bit_exact(native, shape, axis, bits, signed, note, layout):
    scale_shape = () if axis is None else (shape[axis],)
    x, s = _inputs(
        shape, scale_shape, memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format
    )
    if layout == "sliced":
        x = x[..., : max(1, shape[-1] - 2)]  # non-dense, like a supernet's sliced weight
        if axis is not None and axis == x.dim() - 1:
            s = s[: x.shape[axis]].contiguous()
    if note.startswith("small"):
        s = torch.tensor(0.0625)
    x = x.requires_grad_()
    s = s.clone().requires_grad_()
    y = fake_quant(x, s, bits=bits, signed=signed, axis=axis)
    qmin, qmax = quant_range(bits, signed)
    ref = reference_forward(x.detach(), s.detach(), qmin, qmax, 0, axis)
    assert bits_equal(y, ref) == 0
    assert y.stride() == torch.empty_like(x).stride()
    g = torch.randn_like(y)
    y.backward(g)
    rgx, rgs = reference_backward(g, x.detach(), s.detach(), qmin, qmax, 0, axis)
    assert bits_equal(x.grad, rgx) == 0
    torch.testing.assert_close(s.grad, rgs, rtol=1e-5, atol=1e-4)  # only the summation order differs


def test_cpu_kernel_saves_no_extra_copies(native):
    """The op keeps the input for backward (no mask), and returns a fresh tensor."""
    x = torch.randn(1000, requires_grad=True)
    y = fake_quant(x, torch.tensor(0.01), bits=8, signed=True)
    assert y.data_ptr() != x.data_ptr()


def test_large_outputs_use_their_own_pages(native):
    x = torch.randn(3 * 1024 * 1024)
    y = fake_quant(x, torch.tensor(0.05), bits=8, signed=True)
    assert bits_equal(y, reference_forward(x, torch.tensor(0.05), -128, 127, 0, None)) == 0
    y2 = y.clone()
    del y  # the mapping is released with the tensor; the values were real
    assert torch.isfinite(y2).all()


def test_half_types_match_the_fp32_definition():
    s = torch.tensor(0.03)
    for dtype in (torch.float16, torch.bfloat16):
        x = (torch.randn(4096) * 2).to(dtype)
        y = fake_quant(x, s, bits=6, signed=True)
        assert y.dtype == dtype
        expect = (torch.clamp(torch.round(x.float() / s), -32, 31) * s).to(dtype)
        assert torch.equal(y, expect)


def test_kernel_modes(monkeypatch, tmp_path, caplog):
    x, s = torch.randn(5000), torch.tensor(0.02)
    ref = reference_forward(x, s, -8, 7, 0, None)
    monkeypatch.setenv(kernels.ENV, "reference")
    assert cpu.forward(x, s, -8, 7, 0, None) is None
    assert bits_equal(fake_quant(x, s, bits=4, signed=True), ref) == 0

    # no compiler: auto warns once and runs the reference; native refuses
    monkeypatch.setattr(cpu, "_state", {})
    monkeypatch.setattr(kernels, "_warned", set())
    monkeypatch.setenv("SPOS_HW_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv(kernels.ENV, "auto")
    with caplog.at_level(logging.WARNING):
        assert bits_equal(fake_quant(x, s, bits=4, signed=True), ref) == 0
        fake_quant(x, s, bits=4, signed=True)
    assert sum("cpu fake-quant kernel unavailable" in r.message for r in caplog.records) == 1
    monkeypatch.setenv(kernels.ENV, "native")
    with pytest.raises(RuntimeUnavailable, match="cpu fake-quant kernel is unavailable"):
        fake_quant(x, s, bits=4, signed=True)
    monkeypatch.setenv(kernels.ENV, "fast")
    with pytest.raises(QuantError, match="not a kernel mode"):
        fake_quant(x, s, bits=4, signed=True)


def test_kernel_build_is_cached_and_atomic(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "_state", {})
    monkeypatch.setenv("SPOS_HW_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(kernels.ENV, "native")
    assert cpu.library() is not None
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary left behind
    monkeypatch.setattr(cpu, "_state", {})
    mtime = built[0].stat().st_mtime_ns
    cpu.library()
    assert built[0].stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_kernel_errors_propagate(native, monkeypatch):
    """A failure while the kernel runs is an error, never a silent fallback to the reference."""

    class Broken:
        def fq_forward(self, *args):
            raise OSError("kernel crashed")

    monkeypatch.setattr(cpu, "library", lambda: Broken())
    with pytest.raises(OSError, match="kernel crashed"):
        fake_quant(torch.randn(100), torch.tensor(0.1), bits=8, signed=True)


# ----------------------------------------------------------------------------- autograd


def test_backward_ste_and_lsq_by_hand():
    s = torch.tensor(0.5, requires_grad=True)
    x = torch.tensor([0.2, 0.4, 5.0, -5.0], requires_grad=True)  # v = 0.4, 0.8, 10 (clip hi=1), -10 (clip lo=-2)
    fake_quant(x, s, bits=2, signed=True).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    # d/ds: round(v) - v inside, qmax / qmin clipped: (0 - 0.4) + (2 - 1.8) + 1 + (-2)
    assert s.grad.item() == pytest.approx((0 - 0.4) + (1 - 0.8) + 1 - 2)


def test_sign_quantizer_backward():
    s = torch.tensor([0.5, 2.0], requires_grad=True)
    x = torch.tensor([[0.2, -0.9, 0.0], [-3.0, 1.0, 2.5]], requires_grad=True)
    y = fake_quant(x, s, bits=1, signed=True, axis=0)
    assert y.tolist() == [[0.5, -0.5, 0.5], [-2.0, 2.0, 2.0]]
    y.sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]  # |x / s| <= 1
    assert s.grad.tolist() == [1.0, 1.0]  # sum of signs per channel


def test_grad_scale():
    t = torch.tensor([2.0, 3.0], requires_grad=True)
    (grad_scale(t, 0.25) * torch.tensor([1.0, 4.0])).sum().backward()
    assert t.grad.tolist() == [0.25, 1.0]
    assert lsq_grad_factor(100, 4, True) == pytest.approx(1 / (100 * 7) ** 0.5)


def test_under_torch_compile():
    def f(x, s, w, ws):
        a = fake_quant(torch.relu(x), s, bits=3, signed=False)
        return (a @ fake_quant(w, ws, bits=1, signed=True, axis=0).t()).square().sum()

    torch.manual_seed(0)
    args = [torch.randn(8, 5), torch.tensor(0.2), torch.randn(4, 5), torch.rand(4) + 0.1]
    eager = [a.clone().requires_grad_() for a in args]
    comp = [a.clone().requires_grad_() for a in args]
    f(*eager).backward()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    compiled(*comp).backward()
    for e, c in zip(eager, comp):
        assert torch.equal(e.grad, c.grad)
    with pytest.raises(QuantError, match="scale must be finite"):
        compiled(args[0], torch.tensor(-1.0), args[2], args[3])


@pytest.mark.parametrize("bits, signed, axis", [(4, False, None), (3, True, 0), (1, True, 0)])
def test_eager_fast_path_equals_the_custom_op(bits, signed, axis):
    """``fake_quant`` skips the custom-op dispatcher in eager mode; results and grads are the op's."""
    from spos_hw.quant.fake_quant import sign_quant_op

    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 6, 3, 3, generator=g)
    s = torch.rand(8 if axis == 0 else (), generator=g) * 0.3 + 0.05
    a = [x.clone().requires_grad_(), s.clone().requires_grad_()]
    b = [x.clone().requires_grad_(), s.clone().requires_grad_()]
    ya = fake_quant(a[0], a[1], bits=bits, signed=signed, axis=axis)
    if bits == 1 and signed:
        yb = sign_quant_op(b[0], b[1], axis)
    else:
        yb = fake_quant_op(b[0], b[1], *quant_range(bits, signed), 0, axis)
    grad = torch.randn(ya.shape, generator=g)
    ya.backward(grad)
    yb.backward(grad)
    assert bits_equal(ya, yb) == 0 and bits_equal(a[0].grad, b[0].grad) == 0
    torch.testing.assert_close(a[1].grad, b[1].grad, rtol=0, atol=0)
