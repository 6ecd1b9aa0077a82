"""Tiny seeded models, one per group of HLS ops that segmentation, signal, anomaly and detection students need,
exported and quantized by ONNX Runtime's ``quantize_static`` (QDQ, per tensor): the HLS op tests build them.

Each model is random-init (seeded) and small so a g++ compile of its project takes about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgekd.testing.models import export_float, ort_quantize


class ResizeNet(nn.Module):
    """Conv -> 2x upsampling (nearest or bilinear) -> Conv: a U-Net / FPN decoder step."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.enc, self.dec = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.enc(x))
        extra = {} if self.mode == "nearest" else {"align_corners": False}
        return self.dec(F.interpolate(x, scale_factor=2, mode=self.mode, **extra))


class TransposeNet(nn.Module):
    """An autoencoder's decoder: Conv -> ConvTranspose2d (stride 2, padding, output_padding, groups 2) -> ReLU ->
    ConvTranspose2d (kernel 2x3, strides 1x2, dilation 1x2)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.dec = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.out = nn.ConvTranspose2d(6, 3, (2, 3), stride=(1, 2), padding=(0, 1), dilation=(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.dec(F.relu(self.enc(x)))))


class SignalNet(nn.Module):
    """1-D signal path on [N, C, L]: Conv1d -> MaxPool1d -> AvgPool1d (padded) -> ConvTranspose1d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.avg = nn.AvgPool1d(3, stride=1, padding=1, count_include_pad=False)
        self.up = nn.ConvTranspose1d(4, 3, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.avg(F.max_pool1d(F.relu(self.conv(x)), 2)))


class LinearSignalNet(nn.Module):
    """Conv1d -> 2x linear upsampling -> Conv1d on [N, C, L]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.out = nn.Conv1d(2, 4, 3, padding=1), nn.Conv1d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.interpolate(F.relu(self.conv(x)), scale_factor=2, mode="linear", align_corners=False))


class SliceNet(nn.Module):
    """Split along channels, Slice along H (one window, one strided), a 1x1 conv on one part, Concat along H as the
    graph output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.mix = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv(x), 2, dim=1)
        return torch.cat([self.mix(a[:, :, 1:5, :]), b[:, :, 2:8:2, :]], dim=2)


class ActivationNet(nn.Module):
    """HardSwish after a conv, then Sigmoid and HardSigmoid heads concatenated (MobileNetV3 / detection heads)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(F.hardswish(self.conv(x)))
        return torch.cat([torch.sigmoid(x), F.hardsigmoid(x)], 1)


class SoftmaxNet(nn.Module):
    """Conv -> Flatten -> Linear -> Softmax: the classifier's probabilities as the graph output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(F.relu(self.conv(x)).flatten(1)), 1)


class HeadsNet(nn.Module):
    """A detector's output: two 1x1 conv heads concatenated along channels (``flat``: flattened, along positions)."""

    def __init__(self, flat: bool) -> None:
        super().__init__()
        self.flat = flat
        self.conv, self.boxes, self.scores = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 2, 1), nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))
        a, b = self.boxes(x), self.scores(x)
        return torch.cat([a.flatten(1), b.flatten(1)], 1) if self.flat else torch.cat([a, b], 1)


class SkipUNet(nn.Module):
    """A U-Net step: encoder, strided conv, nearest upsampling *to the skip's size* (the exporter writes Shape ->
    Gather -> Unsqueeze -> Concat -> Cast arithmetic for it), Concat with the skip, 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.down, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.relu(self.enc(x))
        up = F.interpolate(F.relu(self.down(skip)), size=skip.shape[-2:], mode="nearest")
        return self.head(torch.cat([skip, up], 1))


class SignalClassifier(nn.Module):
    """A 1-D signal classifier: Conv1d -> MaxPool1d -> global average pool over L -> Linear -> Softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(2, 8, 5, padding=2), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool1d(F.max_pool1d(F.relu(self.conv(x)), 2), 1)
        return torch.softmax(self.fc(x.flatten(1)), 1)


#: name -> (module factory, input shape without batch)
OP_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resize_nearest": (lambda: ResizeNet("nearest"), (1, 4, 4)),
    "resize_bilinear": (lambda: ResizeNet("bilinear"), (1, 4, 4)),
    "conv_transpose": (TransposeNet, (1, 6, 6)),
    "signal": (SignalNet, (2, 16)),
    "signal_linear": (LinearSignalNet, (2, 16)),
    "signal_classifier": (SignalClassifier, (2, 32)),
    "slice_concat": (SliceNet, (1, 8, 8)),
    "activations": (ActivationNet, (1, 6, 6)),
    "softmax": (SoftmaxNet, (1, 6, 6)),
    "unet": (SkipUNet, (1, 8, 8)),
    "heads": (lambda: HeadsNet(False), (1, 6, 6)),
    "heads_flat": (lambda: HeadsNet(True), (1, 6, 6)),
}


def op_qdq(name: str, workdir: Path, *, samples: int = 64, seed: int = 0, exclude: list[str] | None = None,
           tag: str = "") -> tuple[Path, np.ndarray]:
    """Export ``OP_MODELS[name]`` (seeded) and quantize it with ORT (QDQ, per tensor; ``exclude``: nodes left in
    float); returns (qdq path, inputs)."""
    factory, shape = OP_MODELS[name]
    torch.manual_seed(seed)
    module = factory()
    x = np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)
    float_path = export_float(module, workdir / f"{name}.onnx", x)
    return ort_quantize(float_path, workdir / f"{name}{tag}.qdq.onnx", x[:32], per_channel=False, exclude=exclude), x
