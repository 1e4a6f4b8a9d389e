"""Search spaces, architectures and additive cost tables. Pure Python + numpy: no torch here.

A space is an immutable spec. From it come, for every block position, the *plan* of each
choice: the exact list of conv layers (``ConvSpec``) with their shapes. The plan is the one
source of truth for structure: cost tables are computed from it here, and ``nas.blocks``
builds the torch modules from the very same plan.

Architectures are per-block choice indices along up to four dimensions, always in the
order of ``DIMS``: op, mid-channel scale, weight bits, activation bits. A vectorized batch of
architectures (``ArchBatch``) is an integer array of shape ``[n, num_blocks, 4]``; dimensions a
space does not search are 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

import numpy as np

from spos_hw.errors import ArchError, SpaceError
from spos_hw.nn.bits import FULL_PRECISION

DIMS: tuple[str, ...] = ("op", "ch", "w", "a")
"""Names of the choice dimensions, in ``ArchBatch`` order."""


# ----------------------------------------------------------------------------- layer plans


ACTIVATIONS: tuple[str, ...] = ("relu", "hswish")
"""Activations a unit can end with (``ConvSpec.act``)."""


@dataclass(frozen=True)
class ConvSpec:
    """One conv + BN (+ activation) unit, at the widest mid-channel setting of its block.

    ``relu`` tells whether the unit ends with an activation at all; ``act`` names it (``relu``,
    or ``hswish`` for MobileNetV3-style blocks). ``mid_out`` marks convs whose output width
    follows the block's mid-channel choice; the supernet slices them. Depthwise convs
    (``groups == cin == cout``) follow their input; other grouped convs are never sliced.
    """

    cin: int
    cout: int
    k: int
    stride: int
    in_hw: tuple[int, int]
    groups: int = 1
    relu: bool = True
    mid_out: bool = False
    act: str = "relu"

    def __post_init__(self) -> None:
        if self.act not in ACTIVATIONS:
            raise SpaceError(f"unknown activation {self.act!r}; known: {', '.join(ACTIVATIONS)}")

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.cin == self.cout

    @property
    def signed_output(self) -> bool:
        """Whether the unit's output can be negative (no activation, or h-swish)."""
        return not self.relu or self.act != "relu"

    @property
    def out_hw(self) -> tuple[int, int]:
        p = self.k // 2
        h, w = self.in_hw
        return ((h + 2 * p - self.k) // self.stride + 1, (w + 2 * p - self.k) // self.stride + 1)

    @property
    def macs(self) -> int:
        oh, ow = self.out_hw
        return self.k * self.k * (self.cin // self.groups) * self.cout * oh * ow

    def params(self, bn_affine: bool = True) -> int:
        return self.k * self.k * (self.cin // self.groups) * self.cout + (2 * self.cout if bn_affine else 0)


@dataclass(frozen=True)
class LinearSpec:
    cin: int
    cout: int
    bias: bool = False

    @property
    def macs(self) -> int:
        return self.cin * self.cout

    def params(self, bn_affine: bool = True) -> int:
        return self.cin * self.cout + (self.cout if self.bias else 0)


@dataclass(frozen=True)
class SESpec:
    """Squeeze-and-excitation: global pool, linear ``channels -> reduced`` (+bias) + ReLU,
    linear ``reduced -> channels`` (+bias) + hard sigmoid, then a per-channel scale."""

    channels: int
    reduced: int

    @property
    def macs(self) -> int:
        return 2 * self.channels * self.reduced

    def params(self, bn_affine: bool = True) -> int:
        return 2 * self.channels * self.reduced + self.channels + self.reduced


@dataclass(frozen=True)
class BlockPlan:
    """The layers of one block choice at one position, for one mid-channel count.

    ``kind`` names the rule that combines the branches (see ``nas.blocks``): ``shuffle``
    (channel split / projection + concat + shuffle), ``residual`` (sum + ReLU), ``mbconv``
    (inverted residual, optional ``se``) or ``identity`` (no layers: a skip choice).
    """

    kind: str
    op: str
    in_channels: int
    out_channels: int
    stride: int
    in_hw: tuple[int, int]
    mid: int
    main: tuple[ConvSpec, ...]
    proj: tuple[ConvSpec, ...] = ()
    se: SESpec | None = None

    @property
    def convs(self) -> tuple[ConvSpec, ...]:
        return self.main + self.proj

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.main[-1].out_hw if self.main else self.in_hw

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.convs) + (self.se.macs if self.se else 0)

    def params(self, bn_affine: bool = True) -> int:
        return sum(c.params(bn_affine) for c in self.convs) + (self.se.params() if self.se else 0)


@dataclass(frozen=True)
class Position:
    """One choice-block slot of a space."""

    index: int
    stage: int
    in_channels: int
    out_channels: int
    stride: int
    in_hw: tuple[int, int]
    base_mid: int


# ----------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class Arch:
    """A frozen, hashable architecture: per searched dimension, one choice index per block.

    The canonical string lists the searched dimensions in ``DIMS`` order
    (``op=2,1,0;ch=3,7,1``); a space that searches only ops uses the bare list ``2,1,0``.
    """

    dims: tuple[str, ...]
    values: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.dims) != len(self.values) or not self.dims:
            raise ArchError("an architecture needs one value list per searched dimension")
        if len({len(v) for v in self.values}) != 1:
            raise ArchError("every dimension of an architecture must list the same number of blocks")

    @property
    def num_blocks(self) -> int:
        return len(self.values[0])

    def get(self, dim: str) -> tuple[int, ...]:
        """Choice indices along ``dim``; zeros when the dimension is not searched."""
        if dim in self.dims:
            return self.values[self.dims.index(dim)]
        return (0,) * self.num_blocks

    ops = property(lambda self: self.get("op"))
    channels = property(lambda self: self.get("ch"))
    wbits = property(lambda self: self.get("w"))
    abits = property(lambda self: self.get("a"))

    def __str__(self) -> str:
        if self.dims == ("op",):
            return ",".join(map(str, self.values[0]))
        return ";".join(f"{d}=" + ",".join(map(str, v)) for d, v in zip(self.dims, self.values))

    def to_json(self) -> dict[str, list[int]]:
        return {d: list(v) for d, v in zip(self.dims, self.values)}

    def to_array(self) -> np.ndarray:
        """This arch as one ``[num_blocks, 4]`` row of an ``ArchBatch``."""
        return np.array([self.get(d) for d in DIMS], dtype=np.int64).T

    def choice(self, block: int) -> tuple[int, int, int, int]:
        return tuple(self.get(d)[block] for d in DIMS)  # type: ignore[return-value]


def _parse_ints(text: str, where: str) -> tuple[int, ...]:
    items = [t.strip() for t in text.split(",")]
    if not items or any(not re.fullmatch(r"-?\d+", t) for t in items):
        raise ArchError(f"{where}: expected comma-separated integers, got {text!r}")
    return tuple(int(t) for t in items)


# ----------------------------------------------------------------------------- costs


class CostModel(Protocol):
    """Anything that prices a batch of architectures: FLOPs, params, BitOps, latency."""

    name: str
    unit: str

    def cost(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class AdditiveCost:
    """A cost that is a constant plus one table entry per block: ``fixed + sum_i T[i, choice_i]``.

    ``table`` has shape ``[num_blocks, n_op, n_ch, n_w, n_a]``. Pricing a batch is one gather
    and one sum. Costs of this form also allow exact uniform sampling within a cost bin
    (``nas.sampling``) because the per-block costs are known.

    ``mask`` (same shape, bool) marks the choices the space allows at each block
    (``SearchSpace.choice_mask``); entries it excludes are NaN and never enter ``bounds``.
    ``None`` means every choice is allowed.
    """

    name: str
    unit: str
    fixed: float
    table: np.ndarray
    scale: float = 1.0
    """Display factor: ``--flops-m 330`` means 330 x 1e6 in the table's unit."""
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = np.array(self.table, dtype=np.float64)  # a copy: masked entries are set to NaN
        if self.mask is not None:
            m = np.ascontiguousarray(self.mask, dtype=bool)
            if m.shape != t.shape:
                raise SpaceError(f"cost {self.name!r}: mask shape {list(m.shape)} differs from table shape {list(t.shape)}")
            m.setflags(write=False)
            object.__setattr__(self, "mask", None if m.all() else m)
            t[~m] = np.nan
        t.setflags(write=False)
        object.__setattr__(self, "table", t)
        sizes = t.shape[1:]
        strides = np.array([int(np.prod(sizes[i + 1 :])) for i in range(4)], dtype=np.int64)
        object.__setattr__(self, "_strides", strides)
        object.__setattr__(self, "_active", [i for i in range(4) if sizes[i] > 1])
        object.__setattr__(self, "_flat", t.reshape(-1))
        offsets = np.arange(t.shape[0], dtype=np.int64) * int(np.prod(sizes))
        object.__setattr__(self, "_offsets", offsets)

    @property
    def num_blocks(self) -> int:
        return self.table.shape[0]

    @property
    def per_block(self) -> np.ndarray:
        """``[num_blocks, n_choices]``: the table with each block's choices flattened."""
        return self.table.reshape(self.num_blocks, -1)

    @property
    def allowed(self) -> np.ndarray:
        """``[num_blocks, n_choices]`` bool: the choices each block allows (``per_block``'s layout)."""
        if self.mask is None:
            return np.ones((self.num_blocks, self.per_block.shape[1]), dtype=bool)
        return self.mask.reshape(self.num_blocks, -1)

    def flat_index(self, batch: np.ndarray) -> np.ndarray:
        """Per-block flat choice index ``[n, num_blocks]`` of an ``ArchBatch``."""
        batch = np.asarray(batch)
        idx = None
        for d in self._active:
            term = batch[..., d].astype(np.int64, copy=False) * self._strides[d]
            idx = term if idx is None else idx + term
        if idx is None:
            idx = np.zeros(batch.shape[:-1], dtype=np.int64)
        return idx

    def cost(self, batch: np.ndarray) -> np.ndarray:
        """Cost of every architecture of ``batch`` (``[n, num_blocks, 4]`` or one ``[num_blocks, 4]``)."""
        batch = np.asarray(batch)
        single = batch.ndim == 2
        if single:
            batch = batch[None]
        idx = self.flat_index(batch)
        idx += self._offsets
        out = self._flat.take(idx).sum(axis=1)
        out += self.fixed
        return out[0] if single else out

    def bounds(self) -> tuple[float, float]:
        """Exact minimum and maximum over the whole space (allowed choices only)."""
        pb, ok = self.per_block, self.allowed
        lo = np.where(ok, pb, np.inf).min(axis=1).sum()
        hi = np.where(ok, pb, -np.inf).max(axis=1).sum()
        return self.fixed + float(lo), self.fixed + float(hi)

    def affine(self, a: float, b: float, name: str | None = None) -> AdditiveCost:
        """``a * cost + b``, still additive (how a latency calibration is folded in)."""
        return AdditiveCost(name or self.name, self.unit, a * self.fixed + b, a * self.table, self.scale, self.mask)


# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class SearchSpace:
    """Base of every search space. Subclasses (one per network family) define the topology.

    Subclasses implement ``positions``, ``block_plan``, ``stem_plan`` and ``head_plan``.
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    ops: tuple[str, ...]
    channel_scales: tuple[float, ...] = (1.0,)
    wbits: tuple[int, ...] = (FULL_PRECISION,)
    abits: tuple[int, ...] = (FULL_PRECISION,)
    fixed_bits: tuple[int, int] = (FULL_PRECISION, FULL_PRECISION)
    """Weight and activation bits of the stem and head (they are not searched)."""
    signed_activations: bool = False
    """The TensorRT deploy profile: every activation quantizer uses the signed grid
    ``[-2^(b-1), 2^(b-1) - 1]``, non-negative (post-ReLU) inputs too, so every Q/DQ is INT8
    (docs/quantization.md). False (the ORT profile): post-ReLU inputs use the unsigned grid
    ``[0, 2^b - 1]``, one bit more resolution, but 8-bit ones need UINT8, which TensorRT refuses."""

    family: ClassVar[str] = ""
    families: ClassVar[dict[str, type[SearchSpace]]] = {}
    block_output_signed: ClassVar[bool] = False
    """Whether block outputs can be negative (linear bottlenecks): the head's input is signed then."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.family:
            SearchSpace.families[cls.family] = cls

    # --- to implement per family
    @cached_property
    def positions(self) -> tuple[Position, ...]:
        raise NotImplementedError

    def block_plan(self, pos: Position, op: int, mid: int) -> BlockPlan:
        raise NotImplementedError

    def stem_plan(self) -> tuple[ConvSpec, ...]:
        raise NotImplementedError

    def head_plan(self) -> tuple[tuple[ConvSpec, ...], LinearSpec]:
        raise NotImplementedError

    def position_mask(self, pos: Position) -> np.ndarray | None:
        """Allowed choices at ``pos``, bool ``[n_op, n_ch, n_w, n_a]``; ``None``: all of them.

        Families override this when a choice does not exist everywhere (a skip cannot change
        width or stride); ``choice_rule`` then says why.
        """
        return None

    def choice_rule(self, pos: Position, choice: Sequence[int]) -> str:
        """Why ``choice`` is not allowed at ``pos`` (for error messages)."""
        return "not a choice of this block"

    # --- identity
    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not d["signed_activations"]:  # the default is left out: older spaces keep their fingerprints
            del d["signed_activations"]
        d["family"] = self.family
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> SearchSpace:
        d = dict(d)
        family = d.pop("family", None)
        cls = SearchSpace.families.get(family or "")
        if cls is None:
            raise SpaceError(f"unknown space family {family!r}; known: {sorted(SearchSpace.families)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise SpaceError(f"unknown space fields {sorted(unknown)} for family {family!r}")
        kwargs = {k: _tuplify(v) for k, v in d.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise SpaceError(f"bad space spec: {exc}") from None

    @cached_property
    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of the full spec: artifacts record it to refuse mismatches."""
        blob = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # --- dimensions
    @property
    def num_blocks(self) -> int:
        return len(self.positions)

    @cached_property
    def sizes(self) -> tuple[int, int, int, int]:
        """Number of options along each of ``DIMS``."""
        return (len(self.ops), len(self.channel_scales), len(self.wbits), len(self.abits))

    @cached_property
    def searched_dims(self) -> tuple[str, ...]:
        dims = tuple(d for d, n in zip(DIMS, self.sizes) if n > 1)
        return dims or ("op",)

    @property
    def quantized(self) -> bool:
        return any(b != FULL_PRECISION for b in self.wbits + self.abits)

    @property
    def size(self) -> int:
        """Number of architectures in the space."""
        if not self.masked:
            return int(np.prod(self.sizes, dtype=object) ** self.num_blocks)
        counts = self.choice_mask().reshape(self.num_blocks, -1).sum(axis=1)
        return int(np.prod([int(c) for c in counts], dtype=object))

    # --- per-position choice validity
    @cached_property
    def _mask(self) -> np.ndarray:
        m = np.ones((self.num_blocks, *self.sizes), dtype=bool)
        for pos in self.positions:
            pm = self.position_mask(pos)
            if pm is not None:
                m[pos.index] = pm
        if not m.reshape(self.num_blocks, -1).any(axis=1).all():
            raise SpaceError(f"space {self.name!r} has a block without any allowed choice")
        m.setflags(write=False)
        return m

    def choice_mask(self) -> np.ndarray:
        """bool ``[num_blocks, n_op, n_ch, n_w, n_a]``: the choices each block allows.

        All True for spaces whose every choice exists at every block. Validation, sampling,
        cost bounds, search and the supernet only ever use allowed choices.
        """
        return self._mask

    @cached_property
    def masked(self) -> bool:
        """Whether some block does not allow some choice."""
        return not bool(self._mask.all())

    def allowed_ops(self, pos: Position) -> tuple[int, ...]:
        """Op indices allowed at ``pos`` (with at least one setting of the other dimensions)."""
        return tuple(int(i) for i in np.flatnonzero(self._mask[pos.index].any(axis=(1, 2, 3))))

    def _disallowed_message(self, block: int, choice: Sequence[int]) -> str:
        """One line: the block, the rejected choice, the rule and the allowed values."""
        pos = self.positions[block]
        choice = tuple(int(c) for c in choice)
        pm = self._mask[block]
        named = ", ".join(
            f"{d} {choice[i]} ({self.allowed(d)[choice[i]]})" for i, d in enumerate(DIMS) if d in self.searched_dims
        )
        where = f"{pos.in_channels}->{pos.out_channels} channels, stride {pos.stride}"
        hints = []
        for i, d in enumerate(DIMS):
            if d not in self.searched_dims:
                continue
            idx = list(choice)
            ok = []
            for v in range(self.sizes[i]):
                idx[i] = v
                if pm[tuple(idx)]:
                    ok.append(f"{v}={self.allowed(d)[v]}")
            if ok and len(ok) < self.sizes[i]:
                hints.append(f"allowed {d} here: {', '.join(ok)}")
        hint = "; ".join(hints) if hints else f"allowed op here: {', '.join(f'{j}={self.ops[j]}' for j in self.allowed_ops(pos))}"
        return f"block {block} ({where}): {named} is not allowed: {self.choice_rule(pos, choice)}; {hint}"

    def allowed(self, dim: str) -> tuple:
        return {"op": self.ops, "ch": self.channel_scales, "w": self.wbits, "a": self.abits}[dim]

    def mid_choices(self, pos: Position) -> tuple[int, ...]:
        """Mid-channel count for each channel scale at ``pos``."""
        return tuple(max(1, int(round(pos.base_mid * s))) for s in self.channel_scales)

    def max_mid(self, pos: Position) -> int:
        return max(self.mid_choices(pos))

    # --- architectures
    def arch(self, spec: str | dict | Arch | Sequence[int]) -> Arch:
        """Parse and validate an architecture from its string, JSON dict, op list or ``Arch``."""
        if isinstance(spec, Arch):
            arch = spec
        elif isinstance(spec, dict):
            arch = self._from_dict(spec)
        elif isinstance(spec, str):
            arch = self._from_string(spec)
        else:
            arch = Arch(("op",), (tuple(int(v) for v in spec),))
        self.validate(arch)
        return arch

    def _from_dict(self, d: dict) -> Arch:
        unknown = [k for k in d if k not in DIMS]
        if unknown:
            raise ArchError(f"unknown architecture keys {unknown}; allowed: {list(self.searched_dims)}")
        dims, values = [], []
        for dim in DIMS:
            if dim in d:
                v = d[dim]
                if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                    raise ArchError(f"architecture {dim!r} must be a list of integers, got {v!r}")
                dims.append(dim)
                values.append(tuple(v))
        if not dims:
            raise ArchError(f"empty architecture; expected keys {list(self.searched_dims)}")
        return Arch(tuple(dims), tuple(values))

    def _from_string(self, text: str) -> Arch:
        text = text.strip()
        if not text:
            raise ArchError("empty architecture string")
        if "=" not in text:
            if len(self.searched_dims) != 1:
                raise ArchError(
                    f"space {self.name!r} searches {', '.join(self.searched_dims)}; write the architecture as "
                    + ";".join(f"{d}=..." for d in self.searched_dims)
                )
            return Arch(self.searched_dims, (_parse_ints(text, "architecture"),))
        parts: dict[str, tuple[int, ...]] = {}
        for part in text.split(";"):
            if "=" not in part:
                raise ArchError(f"architecture part {part!r} is not of the form dim=i,j,k")
            dim, _, vals = part.partition("=")
            dim = dim.strip()
            if dim not in DIMS:
                raise ArchError(f"unknown architecture dimension {dim!r}; allowed: {list(self.searched_dims)}")
            if dim in parts:
                raise ArchError(f"architecture dimension {dim!r} given twice")
            parts[dim] = _parse_ints(vals, f"architecture dimension {dim!r}")
        dims = tuple(d for d in DIMS if d in parts)
        return Arch(dims, tuple(parts[d] for d in dims))

    def validate(self, arch: Arch) -> None:
        """Raise ``ArchError`` naming the block, the bad value and the allowed values."""
        if set(arch.dims) != set(self.searched_dims):
            missing = [d for d in self.searched_dims if d not in arch.dims]
            extra = [d for d in arch.dims if d not in self.searched_dims]
            what = (f"missing {missing}" if missing else "") + (" and " if missing and extra else "")
            what += f"{extra} not searched" if extra else ""
            raise ArchError(f"architecture does not fit space {self.name!r} (searches {list(self.searched_dims)}): {what}")
        if arch.num_blocks != self.num_blocks:
            raise ArchError(f"architecture has {arch.num_blocks} blocks, space {self.name!r} has {self.num_blocks}")
        for dim, vals in zip(arch.dims, arch.values):
            n = self.sizes[DIMS.index(dim)]
            for i, v in enumerate(vals):
                if not 0 <= v < n:
                    options = list(enumerate(self.allowed(dim)))
                    if dim == "op" and self.masked:  # name only what this block allows
                        options = [(j, self.ops[j]) for j in self.allowed_ops(self.positions[i])]
                    allowed = ", ".join(f"{j}={o}" for j, o in options)
                    raise ArchError(f"block {i}: {dim} index {v} is out of range; allowed {allowed}")
        if self.masked:
            row = arch.to_array()
            for i in range(self.num_blocks):
                if not self._mask[(i, *row[i])]:
                    raise ArchError(self._disallowed_message(i, row[i]))

    def encode(self, archs: Iterable[Arch]) -> np.ndarray:
        """Stack archs into an ``ArchBatch`` ``[n, num_blocks, 4]``."""
        rows = [a.to_array() for a in archs]
        if not rows:
            return np.zeros((0, self.num_blocks, 4), dtype=np.int64)
        return np.stack(rows)

    def decode(self, batch: np.ndarray) -> list[Arch]:
        batch = np.asarray(batch)
        if batch.ndim == 2:
            batch = batch[None]
        idx = [DIMS.index(d) for d in self.searched_dims]
        return [Arch(self.searched_dims, tuple(tuple(int(v) for v in row[:, i]) for i in idx)) for row in batch]

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        """Validate an ``ArchBatch`` as a whole (shape and ranges) and return it as int64."""
        batch = np.asarray(batch)
        if batch.ndim != 3 or batch.shape[1:] != (self.num_blocks, 4):
            raise ArchError(f"architecture batch must have shape [n, {self.num_blocks}, 4], got {list(batch.shape)}")
        hi = np.array(self.sizes)
        bad = (batch < 0) | (batch >= hi)
        if bad.any():
            n, blk, d = map(int, np.argwhere(bad)[0])
            raise ArchError(f"architecture {n}, block {blk}: {DIMS[d]} index {int(batch[n, blk, d])} out of range 0..{hi[d] - 1}")
        batch = batch.astype(np.int64, copy=False)
        if self.masked:
            ok = self._mask[np.arange(self.num_blocks)[None, :], batch[..., 0], batch[..., 1], batch[..., 2], batch[..., 3]]
            if not ok.all():
                n, blk = map(int, np.argwhere(~ok)[0])
                raise ArchError(f"architecture {n}, " + self._disallowed_message(blk, batch[n, blk]))
        return batch

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` architectures drawn uniformly from the whole space, as an ``ArchBatch``.

        Each block draws uniformly among its allowed choices, so every architecture of the
        space is equally likely.
        """
        out = np.zeros((n, self.num_blocks, 4), dtype=np.int64)
        if self.masked:
            table, counts = self._allowed_flat
            pick = np.floor(rng.random((n, self.num_blocks)) * counts).astype(np.int64)
            flat = table[np.arange(self.num_blocks)[None, :], np.minimum(pick, counts - 1)]
            for d, idx in enumerate(np.unravel_index(flat, self.sizes)):
                out[..., d] = idx
            return out
        for d, size in enumerate(self.sizes):
            if size > 1:
                out[..., d] = rng.integers(0, size, size=(n, self.num_blocks))
        return out

    @cached_property
    def _allowed_flat(self) -> tuple[np.ndarray, np.ndarray]:
        """Per block, its allowed flat choice indices (padded ``[blocks, max]``) and their count."""
        flat = self._mask.reshape(self.num_blocks, -1)
        counts = flat.sum(axis=1)
        table = np.zeros((self.num_blocks, int(counts.max())), dtype=np.int64)
        for b in range(self.num_blocks):
            idx = np.flatnonzero(flat[b])
            table[b, : len(idx)] = idx
        return table, counts

    def random_arch(self, rng: np.random.Generator) -> Arch:
        return self.decode(self.sample(rng, 1))[0]

    # --- plans for a concrete arch
    def plan(self, pos: Position, choice: Sequence[int]) -> BlockPlan:
        """The plan of ``choice = (op, ch, w, a)`` at ``pos`` (bits do not change the layers)."""
        return self.block_plan(pos, choice[0], self.mid_choices(pos)[choice[1]])

    def bits(self, choice: Sequence[int]) -> tuple[int, int]:
        return self.wbits[choice[2]], self.abits[choice[3]]

    def signature(self, pos: Position, choice: Sequence[int]) -> str:
        """Key of a block's shape and choice: identical signatures cost the same on any device."""
        plan = self.plan(pos, choice)
        w, a = self.bits(choice)
        h, wd = plan.in_hw
        key = f"{self.family}/{plan.op}/i{plan.in_channels}-o{plan.out_channels}-m{plan.mid}-s{plan.stride}-r{h}x{wd}"
        if self.quantized:
            key += f"-w{w}a{a}"
        return key

    # --- cost tables
    def _table(self, per_plan) -> np.ndarray:
        """``[blocks, n_op, n_ch, n_w, n_a]`` of ``per_plan(plan, wbits, abits)``; NaN where not allowed."""
        nop, nch, nw, na = self.sizes
        mask = self._mask
        t = np.full((self.num_blocks, nop, nch, nw, na), np.nan, dtype=np.float64)
        for pos in self.positions:
            for op in range(nop):
                for ch, mid in enumerate(self.mid_choices(pos)):
                    if not mask[pos.index, op, ch].any():
                        continue
                    plan = self.block_plan(pos, op, mid)
                    for w in range(nw):
                        for a in range(na):
                            if mask[pos.index, op, ch, w, a]:
                                t[pos.index, op, ch, w, a] = per_plan(plan, self.wbits[w], self.abits[a])
        return t

    def _cost(self, name: str, unit: str, fixed: float, table: np.ndarray, scale: float) -> AdditiveCost:
        return AdditiveCost(name, unit, fixed, table, scale, self._mask if self.masked else None)

    def _fixed(self, per_layer) -> float:
        head_convs, linear = self.head_plan()
        return float(sum(per_layer(c) for c in self.stem_plan() + head_convs) + per_layer(linear))

    @cached_property
    def flops(self) -> AdditiveCost:
        """Multiply-accumulates of conv and linear layers at batch 1, as the paper counts FLOPs."""
        return self._cost("flops", "FLOPs", self._fixed(lambda c: c.macs), self._table(lambda p, w, a: p.macs), 1e6)

    @cached_property
    def params(self) -> AdditiveCost:
        """Parameters of the standalone network, BN affine included."""
        return self._cost("params", "params", self._fixed(lambda c: c.params()), self._table(lambda p, w, a: p.params()), 1e6)

    @cached_property
    def bitops(self) -> AdditiveCost:
        """MACs x weight bits x activation bits; float layers count 32 x 32."""
        fw, fa = self.fixed_bits
        return self._cost(
            "bitops", "BitOps", self._fixed(lambda c: c.macs * fw * fa), self._table(lambda p, w, a: p.macs * w * a), 1e9
        )

    def cost_model(self, name: str) -> AdditiveCost:
        models = {"flops": self.flops, "params": self.params, "bitops": self.bitops}
        if name not in models:
            raise SpaceError(f"unknown cost model {name!r}; built-in: {sorted(models)} (latency needs a table)")
        return models[name]

    # --- reporting
    def describe(self) -> dict[str, Any]:
        lo, hi = self.flops.bounds()
        out: dict[str, Any] = {
            "name": self.name,
            "family": self.family,
            "fingerprint": self.fingerprint,
            "num_blocks": self.num_blocks,
            "dims": list(self.searched_dims),
            "choices": [[n for n in self.sizes if n > 1] or [1] for _ in self.positions],
            "options": {d: list(self.allowed(d)) for d in self.searched_dims},
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "size": self.size if self.size < 2**63 else str(self.size),
            "flops_range": [int(lo), int(hi)],
        }
        if self.masked:  # how many choices each block allows (a skip exists only at some blocks)
            out["allowed_per_block"] = [int(n) for n in self._mask.reshape(self.num_blocks, -1).sum(axis=1)]
        return out

    def summarize(self, arch: Arch) -> dict[str, Any]:
        """Costs and decoded choices of one architecture (what ``spos-hw info`` prints)."""
        self.validate(arch)
        row = arch.to_array()
        blocks = []
        for pos in self.positions:
            c = row[pos.index]
            plan = self.plan(pos, c)
            entry = {"op": plan.op, "mid": plan.mid, "stride": plan.stride}
            if self.quantized:
                entry["wbits"], entry["abits"] = self.bits(c)
            blocks.append(entry)
        out: dict[str, Any] = {
            "space": self.name,
            "fingerprint": self.fingerprint,
            "arch": str(arch),
            "arch_json": arch.to_json(),
            "flops": int(round(self.flops.cost(row))),
            "params": int(round(self.params.cost(row))),
        }
        if self.quantized:
            out["bitops"] = int(round(self.bitops.cost(row)))
        out["blocks"] = blocks
        return out


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuplify(x) for k, x in v.items()}
    return v


@dataclass(frozen=True)
class Stage:
    repeats: int
    out_channels: int
    stride: int = 2


def stage_positions(stages: Sequence[Stage], in_channels: int, in_hw: tuple[int, int], mid_ratio: float) -> tuple[Position, ...]:
    """Block positions of stages of repeated blocks; a stage's first block has its stride.

    ``base_mid`` of each position is ``int(out_channels * mid_ratio)``.
    """
    c, hw = in_channels, in_hw
    out: list[Position] = []
    for si, st in enumerate(stages):
        for j in range(st.repeats):
            stride = st.stride if j == 0 else 1
            out.append(Position(len(out), si, c, st.out_channels, stride, hw, int(st.out_channels * mid_ratio)))
            hw = ((hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)
            c = st.out_channels
    return tuple(out)


def stages_from(value: Any) -> tuple[Stage, ...]:
    """Stages from their JSON form (list of dicts or tuples)."""
    out = []
    for s in value:
        out.append(s if isinstance(s, Stage) else Stage(**s) if isinstance(s, dict) else Stage(*s))
    return tuple(out)


__all__ = [
    "ACTIVATIONS",
    "DIMS",
    "FULL_PRECISION",
    "AdditiveCost",
    "Arch",
    "BlockPlan",
    "ConvSpec",
    "CostModel",
    "LinearSpec",
    "Position",
    "SESpec",
    "SearchSpace",
    "Stage",
    "stage_positions",
    "stages_from",
]
