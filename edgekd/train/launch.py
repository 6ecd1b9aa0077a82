"""Run ``fine_tune`` in N processes with torchrun, from an ordinary (single-process) caller.

``run_fine_tune(..., nproc=N)`` pickles the job (student, teacher, data, config, hooks) into a private
folder, runs ``python -m torch.distributed.run --standalone --nproc-per-node N -m edgekd.train.launch JOB``,
and loads rank 0's weights back into ``student`` (in place, like ``fine_tune``). Inside torchrun, or with
nproc <= 1, it simply calls ``fine_tune``. Hooks must be picklable (module-level classes). The workers first
extend ``sys.path`` with the parent's and import the ``py:`` files the job refers to (``job.json``), so what pickles by
reference to the user's modules unpickles there too, from any working directory.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd import errors, sources
from edgekd.errors import ConfigError
from edgekd.progress import log
from edgekd.train import ddp
from edgekd.train.config import FinetuneConfig
from edgekd.train.trainer import TrainingError, TrainResult, fine_tune


def run_fine_tune(student: nn.Module, teacher: nn.Module | None, data: Any, config: FinetuneConfig, *, nproc: int = 1,
                  hooks: Sequence[object] = (), checkpoint_dir: Path | None = None, resume: bool = False,
                  description: str = "distilling", checkpoint_every: int = 0, workdir: Path | None = None) -> TrainResult:
    """``fine_tune`` on ``nproc`` processes (torchrun + DDP, gloo on CPU / nccl on GPU)."""
    kwargs = {"hooks": tuple(hooks), "checkpoint_dir": checkpoint_dir, "resume": resume, "description": description,
              "checkpoint_every": checkpoint_every}
    if nproc <= 1 or ddp.current().distributed:
        return fine_tune(student, teacher, data, config, **kwargs)  # type: ignore[arg-type]
    if config.batch_size % nproc:  # fail here, not in N workers
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by {nproc} processes",
                          where=f"{description} batch_size", hint=f"use a multiple of {nproc}")
    with tempfile.TemporaryDirectory(prefix="edgekd-ddp-", dir=workdir) as tmp:
        job = Path(tmp) / "job.pt"
        _write_job(job, {"student": student, "teacher": teacher, "data": data, "config": config, "kwargs": kwargs},
                   nproc, description)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "edgekd.train.launch", str(job)]
        log(f"{description}: launching {nproc} processes: {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, check=False)
        reports = sorted(Path(tmp).glob("error-*.json"), key=lambda f: int(f.stem.rpartition("-")[2]))
        if reports:  # a rank's edgekd error with its own type, text, where and hint (the lowest rank's)
            err = json.loads(reports[0].read_text())
            cls = getattr(errors, err["type"], None) or getattr(sys.modules[__name__], err["type"], TrainingError)
            raise cls(err["message"], where=err["where"], hint=err["hint"])
        result_file = Path(tmp) / "result.pt"
        if proc.returncode != 0 or not result_file.is_file():
            raise TrainingError(f"torchrun with {nproc} processes failed (exit code {proc.returncode})",
                                where=description, hint="see the worker output above; try nproc = 1 to debug")
        res = torch.load(result_file, map_location="cpu", weights_only=False)  # written by our own rank 0
    device = next(student.parameters()).device
    student.load_state_dict({k: v.to(device) for k, v in res["state_dict"].items()})
    student.eval()
    return TrainResult(model=student, history=res["history"], best_accuracy=res["best_accuracy"],
                       final_accuracy=res["final_accuracy"], steps=res["steps"], seconds=res["seconds"], extra=res["extra"])


_NOT_PICKLABLE_HINT = ("define the models', data's and hooks' classes at module level in an importable module or a "
                       "py: file (not in __main__, a notebook or a function), or train with nproc = 1")


def _write_job(job: Path, payload: dict[str, Any], nproc: int, description: str) -> None:
    """The job for the workers: ``job.pt`` (pickled by reference) and ``job.json``, what the workers import before
    unpickling it: the parent's ``sys.path`` (cwd included) and the ``py:`` files it loaded."""
    in_main = sorted({type(obj).__qualname__ for obj in _objects(payload) if type(obj).__module__ == "__main__"})
    if in_main:
        raise ConfigError(f"{', '.join(in_main)} {'is' if len(in_main) == 1 else 'are'} defined in __main__, which the "
                          f"{nproc} worker processes cannot import", where=description, hint=_NOT_PICKLABLE_HINT)
    try:
        torch.save(payload, job, pickle_protocol=2)  # protocol 2: every class reference is a GLOBAL opcode
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ConfigError(f"cannot hand the training job to {nproc} worker processes: {exc}", where=description,
                          hint=_NOT_PICKLABLE_HINT) from None
    files = [f for f in map(sources.file_of_module, sorted(_referenced_modules(job))) if f is not None]
    sys_path = [str(Path(p or ".").resolve()) for p in sys.path]  # "" is the cwd
    job.with_suffix(".json").write_text(json.dumps({"sys_path": sys_path, "py_files": [str(f) for f in files]}))


def _referenced_modules(job: Path) -> set[str]:
    """The modules whose classes or functions the pickled job refers to (read from its GLOBAL opcodes)."""
    with zipfile.ZipFile(job) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return {str(arg).partition(" ")[0] for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def _objects(payload: dict[str, Any]) -> list[object]:
    """The job's models with all their submodules, its data and its hooks (what pickles by class reference)."""
    out: list[object] = [payload["data"], *payload["kwargs"]["hooks"]]
    for model in (payload["student"], payload["teacher"]):
        out.extend(model.modules() if isinstance(model, nn.Module) else [])
    return out


def _load_job(job_path: Path) -> dict[str, Any]:
    """Import what ``job.json`` names, then unpickle the job; any failure is a ConfigError naming what is missing."""
    preamble = json.loads(job_path.with_suffix(".json").read_text())
    sys.path[:0] = [p for p in preamble["sys_path"] if p not in sys.path]
    try:
        for file in preamble["py_files"]:
            sources.import_file(Path(file))
        return torch.load(job_path, map_location="cpu", weights_only=False)  # written by run_fine_tune, same user
    except Exception as exc:  # whatever the user's code raises: one clear error
        raise ConfigError(f"a worker process cannot load the training job: {type(exc).__name__}: {exc}",
                          where="torchrun worker", hint=_NOT_PICKLABLE_HINT) from None


def _report_error(job_path: Path, exc: errors.EdgekdError, info: ddp.DistInfo) -> None:
    """``error-RANK.json``, written by every failing rank (torchrun may stop rank 0 as soon as another fails),
    atomically (nor may the parent read half a file)."""
    out = job_path.parent / f"error-{info.rank}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"type": type(exc).__name__, "message": exc.message, "where": exc.where, "hint": exc.hint}))
    os.replace(tmp, out)


def _worker(job_path: Path) -> int:
    info = ddp.init_from_env()
    try:
        job = _load_job(job_path)
    except errors.EdgekdError as exc:
        _report_error(job_path, exc, info)
        return 1
    student, teacher = job["student"], job["teacher"]
    if info.backend == "nccl":
        student.to(f"cuda:{info.local_rank}")
        if teacher is not None:
            teacher.to(f"cuda:{info.local_rank}")
    try:
        result = fine_tune(student, teacher, job["data"], job["config"], **job["kwargs"])
    except errors.EdgekdError as exc:
        _report_error(job_path, exc, info)
        return 1
    if info.is_main:
        torch.save({"state_dict": {k: v.cpu() for k, v in result.model.state_dict().items()}, "history": result.history,
                    "best_accuracy": result.best_accuracy, "final_accuracy": result.final_accuracy,
                    "steps": result.steps, "seconds": result.seconds, "extra": result.extra},
                   job_path.parent / "result.pt")
    ddp.barrier(info)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(Path(sys.argv[1])))
