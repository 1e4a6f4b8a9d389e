"""ONNX models of the units: blocks exported in batches, whole subnets composed from them.

``torch.onnx.export(dynamo=True)`` has a large fixed cost per call (seconds), so the blocks are
exported together as one multi-input, multi-output module (through the shared helper
``spos_hw.deploy.onnx``) and each block's graph is extracted by its input and output names.
The dynamo exporter translates and optimizes per op, so an extracted graph is the one a lone
export would give. A calibration subnet is the stem, its blocks and the head chained into one
graph: the same ops a ``SubNet`` export produces (a test checks this), without exporting it
again. ``validate-lut`` still exports every validation subnet on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from spos_hw.latency.units import HEAD, STEM, Unit
from spos_hw.nas.space import Arch, SearchSpace

log = logging.getLogger(__name__)

EXPORT_CHUNK = 48
"""Blocks exported per ``torch.onnx.export`` call."""


def _bag(modules):
    from torch import nn

    class Bag(nn.Module):
        """Runs module i on input i; one export for many blocks."""

        def __init__(self) -> None:
            super().__init__()
            self.parts = nn.ModuleList(modules)

        def forward(self, *xs):
            return tuple(m(x) for m, x in zip(self.parts, xs))

    return Bag().eval()


def export_units(units: Sequence[Unit], *, chunk: int | None = None, progress: bool = False) -> dict:
    """``key -> onnx.ModelProto`` for every unit (blocks, stem, head), ``chunk`` (default
    ``EXPORT_CHUNK``) per export call."""
    import onnx
    import torch
    from onnx.utils import Extractor
    from tqdm.auto import tqdm

    from spos_hw.deploy.onnx import export_onnx

    chunk = chunk or EXPORT_CHUNK
    out: dict = {}
    gen = torch.Generator().manual_seed(0)
    units = list(units)
    with tqdm(total=len(units), desc="export", unit="block", disable=not progress, leave=False) as bar:
        for start in range(0, len(units), chunk):
            group = units[start : start + chunk]
            xs = [torch.randn(*u.input_shape, generator=gen) for u in group]
            names_in = [f"input{i}" for i in range(len(group))]
            names_out = [f"output{i}" for i in range(len(group))]
            bag = export_onnx(_bag([u.build() for u in group]), xs, input_names=names_in, output_names=names_out, check=False)
            extractor = Extractor(bag)
            for u, i, o in zip(group, names_in, names_out):
                part = extractor.extract_model([i], [o])
                _rename_io(part, i, "input", o, "output")
                onnx.checker.check_model(part)
                out[u.key] = part
            bar.update(len(group))
    return out


def _rename_io(model, old_in: str, new_in: str, old_out: str, new_out: str) -> None:
    """Rename a single-input, single-output graph's I/O in place."""
    mapping = {old_in: new_in, old_out: new_out}
    g = model.graph
    for vi in list(g.input) + list(g.output):
        vi.name = mapping.get(vi.name, vi.name)
    for node in g.node:
        for seq in (node.input, node.output):
            for j, name in enumerate(seq):
                if name in mapping:
                    seq[j] = mapping[name]


def compose(parts: Sequence) -> object:
    """Chain single-input, single-output ONNX graphs into one (``input`` -> ... -> ``output``)."""
    import onnx
    from onnx import helper

    nodes, inits = [], []
    prev = "input"
    last = len(parts) - 1
    for i, model in enumerate(parts):
        g = model.graph
        if len(g.input) != 1 or len(g.output) != 1 or g.sparse_initializer or model.functions:
            raise ValueError("compose needs single-input, single-output graphs without functions")
        src, dst = g.input[0].name, g.output[0].name

        def rename(name: str, i=i, src=src, dst=dst) -> str:
            if not name:
                return name
            if name == src:
                return prev
            if name == dst and i == last:
                return "output"
            return f"u{i}/{name}"

        for init in g.initializer:
            t = onnx.TensorProto()
            t.CopyFrom(init)
            t.name = rename(init.name)
            inits.append(t)
        for node in g.node:
            n = onnx.NodeProto()
            n.CopyFrom(node)
            n.name = f"u{i}/{node.name}"
            n.input[:] = [rename(x) for x in node.input]
            n.output[:] = [rename(x) for x in node.output]
            nodes.append(n)
        prev = rename(dst)
    first_in, last_out = onnx.ValueInfoProto(), onnx.ValueInfoProto()
    first_in.CopyFrom(parts[0].graph.input[0])
    first_in.name = "input"
    last_out.CopyFrom(parts[-1].graph.output[0])
    last_out.name = "output"
    graph = helper.make_graph(nodes, "subnet", [first_in], [last_out], inits)
    model = helper.make_model(graph, opset_imports=list(parts[0].opset_import), ir_version=parts[0].ir_version)
    onnx.checker.check_model(model)
    return model


def compose_net(space: SearchSpace, arch: Arch, models: Mapping[str, object]) -> object:
    """The whole subnet ``arch`` as one graph chained from the unit models (stem, blocks, head)."""
    row = arch.to_array()
    keys = [STEM] + [space.signature(p, row[p.index]) for p in space.positions] + [HEAD]
    return compose([models[k] for k in keys])


__all__ = ["EXPORT_CHUNK", "compose", "compose_net", "export_units"]
