"""PTQ steps on a brevitas model: activation calibration and bias correction.

Both run the model on a few hundred training samples in eval mode; neither needs labels.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.inputs import call, to_torch
from edgekd.progress import task


def model_input(x: Any) -> Any:
    """A batch as the model takes it: integer arrays (token ids for an Embedding) stay int64, all else float32;
    several inputs: a TensorInputs (edgekd.inputs, the one conversion)."""
    return to_torch(x)


def _batches(x: np.ndarray, samples: int, batch: int) -> list[torch.Tensor]:
    x = x[:samples]
    return [model_input(x[i : i + batch]) for i in range(0, len(x), batch)]


def _run_in_mode(mode: Any, model: nn.Module, x: np.ndarray, samples: int, batch: int, description: str) -> int:
    """Forward ``samples`` inputs through ``model`` inside a brevitas mode context; returns the samples used."""
    batches = _batches(x, samples, batch)
    model.eval()
    with warnings.catch_warnings(), torch.no_grad(), mode(model), task(description, len(batches)) as bar:
        warnings.simplefilter("ignore")
        for xb in batches:
            call(model, xb)
            bar.advance()
    model.eval()
    return sum(len(b) for b in batches)


def calibrate(model: nn.Module, x: np.ndarray, *, samples: int = 512, batch: int = 64) -> int:
    """Collect activation statistics (brevitas ``calibration_mode``); returns the samples used."""
    from brevitas.graph.calibrate import calibration_mode

    used = _run_in_mode(calibration_mode, model, x, samples, batch, "calibrating activations")
    # brevitas's calibration_mode saves each proxy's observer_only flag before setting it; a quantizer shared by
    # several proxies (concat alignment: a U-Net skip, a Fire module) is saved again after it was set, so it is
    # "restored" to observer-only and passes values through unquantized while declaring its scale
    for module in model.modules():
        if getattr(module, "observer_only", False):
            module.observer_only = False
    return used


def correct_bias(model: nn.Module, x: np.ndarray, *, samples: int = 512, batch: int = 64) -> int:
    """brevitas ``bias_correction_mode``: shift each layer's bias by the mean error quantization adds."""
    from brevitas.graph.calibrate import bias_correction_mode

    return _run_in_mode(bias_correction_mode, model, x, samples, batch, "bias correction")
