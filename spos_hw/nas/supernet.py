"""The weight-sharing supernet and the standalone subnets it materializes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from spos_hw.errors import ArchError
from spos_hw.nas.blocks import ConvBNAct, Head, Stem, build_block
from spos_hw.nas.space import Arch, SearchSpace
from spos_hw.nn.factory import layers_for


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
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        layers = layers_for(space, bn_affine=False, bits_choices=self._bits_choices(space))
        fixed = layers_for(space, bn_affine=False, bits_choices=[space.fixed_bits])
        self.stem = Stem(space.stem_plan(), fixed)
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                build_block(space.block_plan(p, op, space.max_mid(p)), layers) if op in space.allowed_ops(p) else NotAChoice(p.index, space.ops[op])
                for op in range(len(space.ops))
            )
            for p in space.positions
        )
        self.head = Head(space.head_plan(), space.dropout, fixed, signed_input=space.block_output_signed)
        self._mids = [space.mid_choices(p) for p in space.positions]

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

    def partial_parameters(self, arch: Arch | np.ndarray) -> list[tuple[nn.Parameter, tuple[slice, ...]]]:
        """Parameters ``arch`` uses only in part (narrower channel choices), with the used slice.

        These are the conv weights (first output and input channels) and, in quantized spaces,
        their per-channel weight step sizes (first output channels). Their gradient is zero
        outside the slice, but SGD's momentum and weight decay would still move it; the trainer
        restores those entries after the step so unchosen channels stay put.
        """
        row = arch.to_array() if isinstance(arch, Arch) else np.asarray(arch)
        out: list[tuple[nn.Parameter, tuple[slice, ...]]] = []
        for pos, choices in zip(self.space.positions, self.blocks):
            choice = row[pos.index]
            plan = self.space.plan(pos, choice)
            wbits = self.space.bits(choice)[0]
            convs = [u.conv for u in choices[int(choice[0])].modules() if isinstance(u, ConvBNAct)]  # plan order
            if len(convs) != len(plan.convs):
                raise RuntimeError(f"block {pos.index}: {len(convs)} conv modules but the plan lists {len(plan.convs)}")
            for conv, spec in zip(convs, plan.convs):
                used = (spec.cout, spec.cin // spec.groups)
                if used == tuple(conv.weight.shape[:2]):
                    continue
                out.append((conv.weight, (slice(0, used[0]), slice(0, used[1]))))
                steps = getattr(conv, "wq", None)
                if steps is not None and f"b{wbits}" in steps and used[0] != conv.weight.shape[0]:
                    out.append((steps[f"b{wbits}"].scale, (slice(0, used[0]),)))
        return out

    def materialize(self, arch: Arch, *, copy_weights: bool = True) -> "SubNet":
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
        """Copy the chosen ops' weights and buffers, keeping the first channels of sliced tensors."""
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
            dst.copy_(s[tuple(slice(0, n) for n in dst.shape)] if dst.dim() else s)
