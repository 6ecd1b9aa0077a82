"""The ``distill`` pass: train the student against the teacher (Hinton KD, reverse KL, hints, attention).

A profile entry is a FinetuneConfig table plus checkpoint options::

    [[passes]]
    name = "distill"
    epochs = 40
    schedule = "onecycle"
    temperature = 4.0
    alpha = 0.9

With ``edgekd compress --nproc N`` the training runs under torchrun with N processes.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgekd import synthetic  # noqa: F401 - registers the synthetic:bn data generator
from edgekd.artifact import Artifact
from edgekd.errors import PassError
from edgekd.passes import PassContext, register_pass
from edgekd.train import FinetuneConfig
from edgekd.train.launch import run_fine_tune


@dataclass(frozen=True)
class DistillConfig(FinetuneConfig):
    """FinetuneConfig plus where to keep checkpoints (best.pt, last.pt) and whether to resume from last.pt."""

    checkpoint_dir: str | None = None
    resume: bool = False
    checkpoint_every: int = 0  # also save last.pt every N steps (0: after each epoch only)
    keep: Literal["best", "last"] = "best"  # distillation returns the best validation epoch by default

    def finetune(self) -> FinetuneConfig:
        return FinetuneConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(FinetuneConfig)})


@register_pass("distill", DistillConfig, compresses=False)
def distill(artifact: Artifact, config: DistillConfig, ctx: PassContext) -> Artifact:
    """Knowledge distillation: train the student against the frozen teacher."""
    if artifact.kind != "torch":
        raise PassError(f"distill needs a torch model, got a {artifact.kind!r} artifact", where="distill",
                        hint="put distill before export-level passes in the profile")
    if ctx.teacher is None and config.uses_teacher:
        raise PassError("the distill pass needs a teacher", where="distill",
                        hint="pass --teacher SRC (or set loss = 'ce' for plain supervised training)")
    if ctx.data is None:
        raise PassError("the distill pass needs data", where="distill", hint="pass --data SRC (or synthetic:bn)")
    student = copy.deepcopy(artifact.payload)
    # --seed shifts the recipe's seed, so repeated runs with different --seed differ (and stay reproducible)
    finetune = dataclasses.replace(config.finetune(), seed=config.seed + ctx.seed)
    result = run_fine_tune(student, ctx.teacher, ctx.data, finetune, nproc=ctx.nproc,
                           checkpoint_dir=Path(config.checkpoint_dir) if config.checkpoint_dir else None,
                           resume=config.resume, description="distill", checkpoint_every=config.checkpoint_every,
                           workdir=ctx.workdir)
    summary = {"loss": config.loss, "epochs_run": len(result.history), "steps": result.steps,
               "best_accuracy": result.best_accuracy, "final_accuracy": result.final_accuracy,
               "train_seconds": round(result.seconds, 2), "processes": result.extra.get("world_size", 1),
               "rank_checksums": result.extra.get("rank_checksums"), "seed": finetune.seed,
               "history": result.history, "kept": result.extra.get("kept")}
    ctx.report.setdefault("distill", {}).update(summary)
    return artifact.evolve("distill", payload=result.model,
                           meta={"distilled": {k: v for k, v in summary.items() if k != "history"}})
