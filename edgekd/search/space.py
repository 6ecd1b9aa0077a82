"""The search space derived from a teacher: a width per channel group and the removal of whole blocks.

Channel groups come from torch-pruning's dependency graph (DepGraph): every set of layers whose output channels
must shrink together (a residual stream, a conv and its BatchNorm, a depthwise pair) is one group with one width,
in multiples of the runtime's channel granule. Removable blocks are the shape-preserving units of the network:
residual blocks (a module whose output has its input's shape) and, inside an ``nn.Sequential``, a stride-1
conv whose input and output shapes match, together with its BatchNorm. Removing a block replaces it with
``nn.Identity``: for a residual block that keeps only the skip path, which is exactly depth pruning.

A ``Candidate`` is data (group widths and removed blocks, by module name): it is what pareto.json and the search
recipe store, and ``SearchSpace.materialize`` turns it back into a model with weights inherited from the teacher
(the channels with the largest L2 group importance are kept).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Group:
    """One set of coupled output channels: ``name`` (its first layer) identifies it, ``members`` are every layer
    whose output channels it sets."""

    name: str
    channels: int
    members: tuple[str, ...]
    #: per-channel L2 importance in the teacher, normalised to mean 1 (so groups compare)
    importance: tuple[float, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class Block:
    """A shape-preserving unit that can be replaced by ``nn.Identity`` (``modules``: one or more module names)."""

    name: str
    modules: tuple[str, ...]
    residual: bool


@dataclass(frozen=True)
class Candidate:
    """A student as data: a width per group (groups left out keep the teacher's width) and removed blocks."""

    widths: tuple[tuple[str, int], ...] = ()
    removed: tuple[str, ...] = ()

    def width(self, group: Group) -> int:
        return dict(self.widths).get(group.name, group.channels)

    def with_width(self, group: str, width: int) -> Candidate:
        widths = dict(self.widths)
        widths[group] = width
        return Candidate(tuple(sorted(widths.items())), self.removed)

    def with_removed(self, block: str) -> Candidate:
        return Candidate(self.widths, tuple(sorted({*self.removed, block})))

    def to_dict(self) -> dict[str, Any]:
        return {"widths": dict(self.widths), "removed": list(self.removed)}

    @staticmethod
    def from_dict(data: Mapping[str, Any], *, where: str) -> Candidate:
        unknown = set(data) - {"widths", "removed"}
        if unknown:
            raise EdgekdError(f"unknown key(s) {', '.join(sorted(unknown))} in a student description", where=where,
                              hint="a student is {widths = {group = channels}, removed = [block, ...]}")
        widths = data.get("widths", {})
        removed = data.get("removed", [])
        if not isinstance(widths, Mapping) or not all(isinstance(v, int) and v > 0 for v in widths.values()):
            raise EdgekdError("widths must map group names to positive channel counts", where=f"{where} widths")
        if not isinstance(removed, list) or not all(isinstance(b, str) for b in removed):
            raise EdgekdError("removed must be a list of block names", where=f"{where} removed")
        return Candidate(tuple(sorted((str(k), int(v)) for k, v in widths.items())), tuple(sorted(removed)))


def _example(example: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    return example if isinstance(example, torch.Tensor) else example[0]


def _graph(model: nn.Module, example: torch.Tensor) -> Any:
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # torch-pruning raises bare errors on ops it cannot trace
        raise EdgekdError(f"torch-pruning could not trace the teacher for a width search ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})", where="edgekd search",
                          hint="the teacher uses an op DepGraph cannot follow (channel shuffles, head reshapes); "
                               "bring your own student to edgekd compress instead") from exc


def _out_handlers() -> tuple[Any, ...]:
    import torch_pruning as tp

    return (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


def _output_layer(model: nn.Module) -> nn.Module:
    weighted = [m for m in model.modules() if isinstance(m, _WEIGHTED)]
    if not weighted:
        raise EdgekdError("the teacher has no Conv/Linear layer to search widths over", where="edgekd search")
    return weighted[-1]


def _groups(model: nn.Module, example: torch.Tensor, ignored: Sequence[nn.Module] = ()) -> list[tuple[Group, Any]]:
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    graph = _graph(model, example)
    handlers = _out_handlers()
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    found = []
    for group in graph.get_all_groups(ignored_layers=[_output_layer(model), *ignored],
                                      root_module_types=[nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear]):
        members = sorted({names[item.dep.target.module] for item in group
                          if isinstance(item.dep.target.module, _WEIGHTED) and item.dep.handler in handlers})
        if not members:
            continue
        root = group[0].dep.target.module
        scores = importance(group)
        channels = int(graph.get_out_channels(root))
        if scores is None or len(scores) != channels:
            continue  # a group torch-pruning cannot score is not searched (its width stays)
        scores = scores.detach().double()
        normed = (scores / scores.mean().clamp_min(1e-12)).tolist()
        found.append((Group(members[0], channels, tuple(members), tuple(normed)), group))
    return found


def _call_counts(model: nn.Module, example: torch.Tensor) -> tuple[dict[str, int], dict[str, tuple[tuple, tuple]]]:
    """How often each module runs in one forward, and its (input shape, output shape)."""
    counts: dict[str, int] = {}
    shapes: dict[str, tuple[tuple, tuple]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod: nn.Module, args: tuple, out: Any, name: str = name) -> None:
            counts[name] = counts.get(name, 0) + 1
            if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                shapes[name] = (tuple(args[0].shape), tuple(out.shape))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return counts, shapes


def _blocks(model: nn.Module, example: torch.Tensor) -> list[Block]:
    counts, shapes = _call_counts(model, example)
    modules = dict(model.named_modules())
    output_layer = {n for n, m in modules.items() if m is _output_layer(model)}
    weighted = {n for n, m in modules.items() if isinstance(m, _WEIGHTED)}

    def contains(name: str, names: set[str]) -> bool:
        return any(n == name or n.startswith(name + ".") for n in names)

    def preserving(name: str) -> bool:
        io = shapes.get(name)
        return counts.get(name) == 1 and io is not None and io[0] == io[1]

    containers = [n for n, m in modules.items() if n and list(m.children()) and not isinstance(m, nn.Sequential)
                  and preserving(n) and contains(n, weighted) and not contains(n, output_layer)]
    # innermost only: a stage made of removable blocks is removed block by block
    blocks = [Block(n, (n,), True) for n in containers if not any(o != n and o.startswith(n + ".") for o in containers)]
    taken = set(containers)
    for seq_name, seq in modules.items():
        if not isinstance(seq, nn.Sequential) or any(seq_name == t or seq_name.startswith(t + ".") for t in taken):
            continue
        children = list(seq.named_children())
        for i, (child, layer) in enumerate(children):
            full = f"{seq_name}.{child}" if seq_name else child
            if not isinstance(layer, _WEIGHTED) or full in output_layer or not preserving(full):
                continue
            if getattr(layer, "stride", (1,)) not in ((1,), (1, 1), (1, 1, 1)) or getattr(layer, "groups", 1) != 1:
                continue
            unit = [full]
            if i + 1 < len(children) and isinstance(children[i + 1][1], _NORMS):
                unit.append(f"{seq_name}.{children[i + 1][0]}" if seq_name else children[i + 1][0])
            blocks.append(Block(full, tuple(unit), False))
    return blocks


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@dataclass
class SearchSpace:
    """Groups and blocks of one teacher, with the channel granule widths are multiples of."""

    groups: list[Group]
    blocks: list[Block]
    granule: int
    example: torch.Tensor = field(repr=False)

    @classmethod
    def from_teacher(cls, teacher: nn.Module, example: torch.Tensor, *, granule: int = 8,
                     depth: bool = True) -> SearchSpace:
        if granule < 1:
            raise EdgekdError(f"granule must be >= 1, got {granule}", where="edgekd search --granule")
        example = _example(example)
        model = copy.deepcopy(teacher).eval()
        groups = [g for g, _ in _groups(model, example)]
        blocks = _blocks(model, example) if depth else []
        if not groups and not blocks:
            raise EdgekdError("the teacher has no prunable channel group and no removable block", where="edgekd search",
                              hint="a model whose every layer feeds the output directly has nothing to search")
        return cls(groups, blocks, granule, example)

    def choices(self, group: Group) -> list[int]:
        """Widths the search may pick for ``group``: multiples of the granule, and the teacher's own width."""
        step = self.granule
        return [*range(step, group.channels, step), group.channels]

    def smallest(self) -> Candidate:
        """Every group at one granule and every block removed: the space's floor."""
        cand = Candidate()
        for group in self.groups:
            cand = cand.with_width(group.name, min(self.choices(group)))
        for block in self.blocks:
            cand = cand.with_removed(block.name)
        return cand

    def random_candidate(self, rng: Any, *, remove_probability: float = 0.3) -> Candidate:
        """A uniformly random width per group and each block removed with ``remove_probability``."""
        cand = Candidate()
        for group in self.groups:
            cand = cand.with_width(group.name, int(rng.choice(self.choices(group))))
        for block in self.blocks:
            if rng.random() < remove_probability:
                cand = cand.with_removed(block.name)
        return cand

    def kept_importance(self, cand: Candidate) -> float:
        """Sum over groups of the importance of the channels ``cand`` keeps (largest first), as a fraction."""
        total = kept = 0.0
        for group in self.groups:
            ordered = sorted(group.importance, reverse=True)
            total += sum(ordered)
            kept += sum(ordered[: cand.width(group)])
        return kept / total if total else 1.0

    def check(self, cand: Candidate, *, where: str) -> None:
        """Refuse a candidate naming groups or blocks this teacher does not have, or widths it cannot take."""
        groups = {g.name: g for g in self.groups}
        for name, width in cand.widths:
            if name not in groups:
                raise EdgekdError(f"group {name!r} is not a channel group of this teacher", where=where,
                                  hint=f"groups: {', '.join(groups)}")
            if not 1 <= width <= groups[name].channels:
                raise EdgekdError(f"group {name!r} has {groups[name].channels} channels, cannot keep {width}",
                                  where=where)
        blocks = {b.name for b in self.blocks}
        bad = [b for b in cand.removed if b not in blocks]
        if bad:
            raise EdgekdError(f"block(s) {', '.join(bad)} are not removable blocks of this teacher", where=where,
                              hint=f"removable: {', '.join(sorted(blocks)) or 'none'}")

    def materialize(self, teacher: nn.Module, cand: Candidate) -> nn.Module:
        """The student ``cand`` describes, with weights inherited from ``teacher`` (a fresh copy)."""
        model = copy.deepcopy(teacher).eval()
        blocks = {b.name: b for b in self.blocks}
        for name in cand.removed:
            for module in blocks[name].modules:
                _set_module(model, module, nn.Identity())
        wanted = {g.name: cand.width(g) for g in self.groups}
        members = {m: g.name for g in self.groups for m in g.members}
        for group, dep_group in _groups(model, self.example):
            owner = next((members[m] for m in group.members if m in members), None)
            width = wanted.get(owner) if owner is not None else None
            if width is None or width >= group.channels:
                continue
            scores = torch.tensor(group.importance)
            drop = torch.argsort(scores)[: group.channels - width].tolist()
            dep_group.prune(idxs=drop)  # the group rebuilds itself on the graph, which tracks earlier prunes
        model.eval()
        with torch.no_grad():
            model(self.example)  # a candidate that no longer runs is a bug in the space, not a bad candidate
        return model

    def describe(self) -> dict[str, Any]:
        return {"granule": self.granule,
                "groups": [{"name": g.name, "channels": g.channels, "members": list(g.members)} for g in self.groups],
                "blocks": [{"name": b.name, "modules": list(b.modules), "residual": b.residual} for b in self.blocks]}
