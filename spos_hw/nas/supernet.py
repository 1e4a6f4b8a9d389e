"""The weight-sharing supernet and the standalone subnets it materializes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spos_hw.errors import ArchError
from spos_hw.nas.blocks import ConvBNAct, Head, Stem, build_block
from spos_hw.nas.sharing import DEFAULT_SHARING, check_sharing, entangle
from spos_hw.nas.space import Arch, SearchSpace
from spos_hw.nn.factory import layers_for
from spos_hw.nn.layers import crop_region, crop_weight


class NotAChoice(nn.Module):
    """Holds the place of an op a block does not allow (a skip that would change width or
    stride): no layers, no parameters, and never run (paths are validated first)."""

    def __init__(self, block: int, op: str) -> None:
        super().__init__()
        self.block, self.op = block, op

    def extra_repr(self) -> str:
        return f"block={self.block}, op={self.op!r}"

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        raise ArchError(f"block {self.block}: op {self.op!r} is not a choice of this block")


class Supernet(nn.Module):
    """Every choice of every block, at its widest; ``forward(x, arch)`` runs one path.

    Channel choices slice the widest weights (first-c channels). BN has no affine parameters,
    as in the paper. Unchosen paths are not touched, so they get no gradient.

    ``sharing`` (``nas.sharing``): ``entangled`` (the default) ties the conv weights of a block's
    choices whose plans differ only in kernel size and width (first channels, centre of the
    kernel); ``independent`` gives every choice its own weights, as the paper does. BN layers
    and quantizer step sizes stay per choice either way.
    """

    def __init__(self, space: SearchSpace, *, sharing: str = DEFAULT_SHARING) -> None:
        super().__init__()
        self.space = space
        self.sharing = check_sharing(sharing)
        layers = layers_for(space, bn_affine=False, bits_choices=self._bits_choices(space))
        fixed = layers_for(space, bn_affine=False, bits_choices=[space.fixed_bits])
        self.stem = Stem(space.stem_plan(), fixed)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                build_block(space.block_plan(p, op, space.max_mid(p)), layers)
                if op in space.allowed_ops(p)
                else NotAChoice(p.index, space.ops[op])
                for op in range(len(space.ops))
            )
            for p in space.positions
        )
        self.head = Head(space.head_plan(), space.dropout, fixed, signed_input=space.block_output_signed)
        self._mids = [space.mid_choices(p) for p in space.positions]
        self.share_groups: list[list[tuple[int, ...]]] = [[(op,) for op in space.allowed_ops(p)] for p in space.positions]
        if self.sharing == "entangled":
            for p, choices in zip(space.positions, self.blocks):
                ops = list(space.allowed_ops(p))
                groups = entangle([choices[op] for op in ops], [space.block_plan(p, op, space.max_mid(p)) for op in ops])
                self.share_groups[p.index] = [tuple(ops[i] for i in g) for g in groups]
        self._uses: dict[tuple[int, int, int, int], list] = {}  # partial_parameters' per-choice masks

    @staticmethod
    def _bits_choices(space: SearchSpace) -> list[tuple[int, int]]:
        return [(w, a) for w in space.wbits for a in space.abits]

    def path(self, arch: Arch | np.ndarray) -> list[tuple[int, int, tuple[int, int]]]:
        """(op, mid channels, bits) per block for ``arch`` (an ``Arch`` or one ``[blocks, 4]`` row)."""
        if isinstance(arch, Arch):
            self.space.validate(arch)
            row = arch.to_array()
        else:
            row = self.space.check_batch(np.asarray(arch)[None])[0]
        return [(int(c[0]), self._mids[i][int(c[1])], self.space.bits(c)) for i, c in enumerate(row)]

    def forward(self, x: torch.Tensor, arch: Arch | np.ndarray) -> torch.Tensor:
        x = self.stem(x, self.space.fixed_bits)
        for choices, (op, mid, bits) in zip(self.blocks, self.path(arch)):
            x = choices[op](x, mid, bits)
        return self.head(x, self.space.fixed_bits)

    def path_parameters(self, arch: Arch | np.ndarray) -> list[nn.Parameter]:
        """Parameters a forward of ``arch`` touches (whole tensors, including sliced ones)."""
        params = list(self.stem.parameters()) + list(self.head.parameters())
        for choices, (op, _, _) in zip(self.blocks, self.path(arch)):
            params += list(choices[op].parameters())
        return params

    def _choice_uses(self, pos, choice) -> list[tuple[nn.Parameter, torch.Tensor | None]]:
        """The parameters one block choice uses, each with a mask of its used entries (None: whole).

        Conv weights: the first output and input channels and, when the weight is shared with a
        larger kernel, its centre; per-channel weight step sizes (quantized spaces): the first
        output channels.
        """
        plan = self.space.plan(pos, choice)
        wbits = self.space.bits(choice)[0]
        convs = [u.conv for u in self.blocks[pos.index][int(choice[0])].modules() if isinstance(u, ConvBNAct)]  # plan order
        if len(convs) != len(plan.convs):
            raise RuntimeError(f"block {pos.index}: {len(convs)} conv modules but the plan lists {len(plan.convs)}")
        uses: list[tuple[nn.Parameter, torch.Tensor | None]] = []
        for conv, spec in zip(convs, plan.convs):
            w = conv.weight
            used = (spec.cout, spec.cin // spec.groups, spec.k, spec.k)
            uses.append((w, None if used == tuple(w.shape) else _mask(w.shape, used)))
            steps = getattr(conv, "wq", None)
            if steps is not None and f"b{wbits}" in steps:
                scale = steps[f"b{wbits}"].scale
                uses.append((scale, None if spec.cout == scale.shape[0] else _mask(scale.shape, (spec.cout,))))
        return uses

    def partial_parameters(self, arch: Arch | np.ndarray) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Parameters the paths ``arch`` (an ``Arch``, one ``[blocks, 4]`` row or ``[k, blocks, 4]``)
        use only in part, each with a mask of the entries some path uses.

        Narrower channel choices use the first channels of a conv weight (and of its per-channel
        step sizes); with entangled sharing a smaller kernel uses the centre of a larger one. The
        gradient is zero elsewhere, but SGD's momentum and weight decay would still move those
        entries; the trainer restores them after the step, so what no path used stays put.
        """
        rows = arch.to_array()[None] if isinstance(arch, Arch) else np.asarray(arch)
        rows = rows[None] if rows.ndim == 2 else rows
        merged: dict[int, tuple[nn.Parameter, torch.Tensor | None]] = {}
        for row in rows:
            for pos in self.space.positions:
                choice = tuple(int(v) for v in row[pos.index])
                key = (pos.index, *choice)
                if key not in self._uses:
                    self._uses[key] = self._choice_uses(pos, choice)
                for p, mask in self._uses[key]:
                    seen = merged.get(id(p))
                    if seen is None:
                        merged[id(p)] = (p, mask)
                    elif seen[1] is not None:
                        merged[id(p)] = (p, None if mask is None else seen[1] | mask)
        return [(p, m) for p, m in merged.values() if m is not None]

    def materialize(self, arch: Arch, *, copy_weights: bool = True) -> SubNet:
        """A standalone network holding only ``arch``'s ops at their exact widths.

        With ``copy_weights`` its weights and BN statistics are the supernet's (sliced), so in
        eval mode it computes what ``self(x, arch)`` computes; otherwise it is freshly
        initialised for retraining. Its BN layers have affine parameters (initialised to 1, 0).
        """
        sub = SubNet(self.space, arch)
        if copy_weights:
            sub.load_from_supernet(self)
        return sub.to(next(self.parameters()).device)


class SubNet(nn.Module):
    """One architecture as a plain network: what is retrained, measured and exported."""

    def __init__(self, space: SearchSpace, arch: Arch) -> None:
        super().__init__()
        space.validate(arch)
        self.space, self.arch = space, arch
        row = arch.to_array()
        bits = [space.bits(c) for c in row]
        fixed = layers_for(space, bn_affine=True, bits_choices=[space.fixed_bits])
        self.stem = Stem(space.stem_plan(), fixed)
        self.blocks = nn.ModuleList(
            build_block(space.plan(p, row[p.index]), layers_for(space, bn_affine=True, bits_choices=[bits[p.index]]))
            for p in space.positions
        )  # each block holds the quantizers and BN of its own bit widths only
        self.head = Head(space.head_plan(), space.dropout, fixed, signed_input=space.block_output_signed)
        self.block_bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x, self.space.fixed_bits)
        for block, bits in zip(self.blocks, self.block_bits):
            x = block(x, None, bits)
        return self.head(x, self.space.fixed_bits)

    @torch.no_grad()
    def load_from_supernet(self, supernet: Supernet) -> None:
        """Copy the chosen ops' weights and buffers: the first channels of sliced tensors and the
        centre of entangled kernels (``nn.layers.crop_weight``), so eval outputs are the supernet's."""
        src = supernet.state_dict()
        ops = self.arch.ops
        for key, dst in self.state_dict().items():
            skey = key
            if key.startswith("blocks."):
                _, i, rest = key.split(".", 2)
                skey = f"blocks.{i}.{ops[int(i)]}.{rest}"
            if skey not in src:
                continue  # BN affine parameters the supernet does not have
            s = src[skey]
            dst.copy_(crop_weight(s, dst.shape) if dst.dim() else s)


def _mask(shape, used) -> torch.Tensor:
    """A boolean mask of ``shape`` that is true on the entries a tensor of ``used`` shape occupies."""
    mask = torch.zeros(tuple(shape), dtype=torch.bool)
    mask[crop_region(shape, used)] = True
    return mask
