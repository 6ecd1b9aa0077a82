"""Training checkpoints: ``last.pt`` (everything needed for an exact resume) and ``best.pt`` (weights).

Files are written atomically (temp file + rename) so a kill during a save never leaves a torn file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from edgekd.errors import PassError

FORMAT = "edgekd.train-checkpoint/1"
LAST = "last.pt"
BEST = "best.pt"


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def config_fingerprint(config: Any) -> dict[str, Any]:
    """The parts of a config a resume must agree with (tuples as lists, like a round-trip would give)."""
    data = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def load_last(directory: Path, config: Any) -> dict[str, Any] | None:
    """The resume state in ``directory/last.pt``, or None if there is none yet."""
    path = directory / LAST
    if not path.is_file():
        return None
    try:
        # weights_only: a last.pt in a folder the user points at is still a file, and must not run code
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PassError(f"cannot read checkpoint: {exc}", where=str(path),
                        hint="delete it to start over, or point checkpoint_dir elsewhere") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PassError("not an edgekd training checkpoint", where=str(path), hint="delete it to start over")
    saved, now = state.get("config"), config_fingerprint(config)
    if saved != now:
        diff = sorted(k for k in set(saved or {}) | set(now) if (saved or {}).get(k) != now.get(k))
        raise PassError(f"checkpoint was written with a different training config (differs in: {', '.join(diff)})",
                        where=str(path), hint="resume with the same config, or delete the checkpoint to start over")
    return state
