"""Tiny teacher / student architectures for the built-in task datasets (edgekd/task_data.py).

``TASK_ARCHS`` maps a name to ``(constructor, default kwargs)``; ``TASK_PAIRS`` names each dataset's teacher and
student and the input shape they take. Every teacher costs 4-10x its student's multiply-accumulates (MACs, counted
by ``count_macs``; tests/test_task_data.py checks the ratio). Outputs follow the task conventions of
``edgekd.metrics``: classes on axis 1 (N x C, N x C x H x W, N x C x L); the detector returns a tuple
``(cls_logits N x (C+1) x G x G, boxes N x 4 x G x G)`` with boxes as (x1, y1, x2, y2) normalised to 0..1.

Students use only Conv / BatchNorm / ReLU / pooling / Linear / ConvTranspose (ops every backend quantizes); the
token-classification teacher uses a TransformerEncoder layer (a teacher only runs in PyTorch).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class TinyUNet(nn.Module):
    """Segmentation: a 2-level U-Net (conv encoder, two convs at 1/4 resolution where the digit's identity is
    decided, ConvTranspose decoder with skip concatenations, 1x1 conv at full resolution), N x C x H x W logits at
    the input's resolution (H, W divisible by 4)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 11, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(*_conv(in_channels, w), *_conv(w, w))
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), *_conv(w, 2 * w))
        self.bottom = nn.Sequential(nn.MaxPool2d(2), *_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w))
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = nn.Sequential(*_conv(4 * w, 2 * w))
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = nn.Sequential(*_conv(2 * w, w, k=1))
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d2 = self.dec2(torch.cat([self.up2(self.bottom(e2)), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1)


class GridDetector(nn.Module):
    """Anchor-free grid detector: ``downsample`` stride-2 convs (widths w, 2w, 4w, ...) down to a G x G grid
    (G = input size / 2**downsample), one more conv and two 1x1 heads. Returns ``(cls_logits, boxes)``: class logits
    N x (C+1) x G x G (0 = background) and boxes N x 4 x G x G decoded in the model: centre = (cell +
    sigmoid(t_xy)) / G, size = sigmoid(t_wh) of the image, (x1, y1, x2, y2) = centre -/+ size / 2, so the output is
    in image coordinates as the targets are."""

    def __init__(self, in_channels: int = 1, num_classes: int = 11, width: int = 16, grid: int = 4,
                 downsample: int = 3) -> None:
        super().__init__()
        widths = [in_channels] + [width * 2 ** min(i, 2) for i in range(downsample)]
        layers = [m for cin, cout in itertools.pairwise(widths) for m in _conv(cin, cout, stride=2)]
        self.backbone = nn.Sequential(*layers, *_conv(widths[-1], widths[-1]))
        self.cls_head = nn.Conv2d(widths[-1], num_classes, 1)
        self.box_head = nn.Conv2d(widths[-1], 4, 1)
        cells = torch.arange(grid, dtype=torch.float32)
        self.register_buffer("cell_xy", torch.stack(torch.meshgrid(cells, cells, indexing="xy"))[None], persistent=False)
        self.grid = grid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(x)
        t = torch.sigmoid(self.box_head(feats))
        centre = (self.cell_xy + t[:, :2]) / self.grid
        half = t[:, 2:] / 2
        return self.cls_head(feats), torch.cat([centre - half, centre + half], dim=1)


class KeypointNet(nn.Module):
    """Keypoint regressor: conv blocks with pooling to a 4 x 4 map, then Linear to 2K coordinates in pixels
    (``out = scale / 2 * (1 + linear)``: an untrained net predicts the image centre)."""

    def __init__(self, in_channels: int = 1, num_outputs: int = 4, width: int = 16, image_size: int = 32,
                 hidden: int = 64) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(*_conv(in_channels, w), nn.MaxPool2d(2), *_conv(w, 2 * w), nn.MaxPool2d(2),
                                      *_conv(2 * w, 2 * w), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * w, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))
        self.half = image_size / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.half * (1 + self.head(self.features(x)))


class ConvAutoencoder(nn.Module):
    """Autoencoder for 1 x 8 x 8 digits (any H, W divisible by 4): two stride-2 convs, a Linear bottleneck of
    ``code`` values, two ConvTranspose layers, sigmoid output (inputs are 0..1). Output shape = input shape."""

    def __init__(self, in_channels: int = 1, width: int = 16, code: int = 16, image_size: int = 8) -> None:
        super().__init__()
        w, s = width, image_size // 4
        self.encoder = nn.Sequential(*_conv(in_channels, w, stride=2), *_conv(w, 2 * w, stride=2), nn.Flatten(),
                                     nn.Linear(2 * w * s * s, code), nn.ReLU())
        self.expand = nn.Sequential(nn.Linear(code, 2 * w * s * s), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(2 * w, w, 2, stride=2), nn.ReLU(),
                                     nn.ConvTranspose2d(w, in_channels, 2, stride=2), nn.Sigmoid())
        self.shape = (2 * w, s, s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.expand(self.encoder(x)).reshape(-1, *self.shape))


class SignalCNN(nn.Module):
    """1-D signal classifier (N x C x L): three Conv1d-BN-ReLU blocks with pooling, global average pool, Linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 4, width: int = 16, kernel: int = 7) -> None:
        super().__init__()
        w, p = width, kernel // 2

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv1d(cin, cout, kernel, padding=p, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(in_channels, w), nn.MaxPool1d(2), *block(w, 2 * w), nn.MaxPool1d(2),
                                      *block(2 * w, 2 * w), nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Linear(2 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TokenConvNet(nn.Module):
    """Token model over int64 ids N x L: Embedding, two Conv1d-BN-ReLU layers over the sequence, then per token a
    1x1 Conv1d (``per_token=True``: N x C x L logits, classes on axis 1) or mean over tokens and Linear (N x C)."""

    def __init__(self, vocab_size: int = 32, num_classes: int = 5, dim: int = 16, kernel: int = 3,
                 per_token: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        p = kernel // 2
        self.body = nn.Sequential(nn.Conv1d(dim, 2 * dim, kernel, padding=p, bias=False), nn.BatchNorm1d(2 * dim),
                                  nn.ReLU(), nn.Conv1d(2 * dim, 2 * dim, kernel, padding=p, bias=False),
                                  nn.BatchNorm1d(2 * dim), nn.ReLU())
        self.per_token = per_token
        self.head = nn.Conv1d(2 * dim, num_classes, 1) if per_token else nn.Linear(2 * dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.body(self.embed(ids).transpose(1, 2))  # N x D x L
        return self.head(h) if self.per_token else self.head(h.mean(dim=2))


class TokenTransformer(nn.Module):
    """Token model over int64 ids N x L: Embedding plus learned positions, ``layers`` TransformerEncoder layers
    (pre-norm, GELU), then a per-token Linear (N x C x L, classes on axis 1) or the mean token and a Linear (N x C)."""

    def __init__(self, vocab_size: int = 32, num_classes: int = 5, dim: int = 64, heads: int = 4, layers: int = 1,
                 ff: int = 128, max_len: int = 64, per_token: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, ff, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.per_token = per_token

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.encoder(self.embed(ids) + self.position[:, : ids.shape[1]]))  # N x L x D
        return self.head(h).transpose(1, 2) if self.per_token else self.head(h.mean(dim=1))


#: name -> (constructor, default kwargs)
TASK_ARCHS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "seg-teacher": (TinyUNet, {"num_classes": 11, "width": 10}),
    "seg-student": (TinyUNet, {"num_classes": 11, "width": 4}),
    "det-teacher": (GridDetector, {"num_classes": 11, "width": 20}),
    "det-student": (GridDetector, {"num_classes": 11, "width": 8}),
    "keypoints-teacher": (KeypointNet, {"width": 16, "hidden": 128}),
    "keypoints-student": (KeypointNet, {"width": 6, "hidden": 32}),
    "ae-teacher": (ConvAutoencoder, {"width": 32, "code": 16}),
    "ae-student": (ConvAutoencoder, {"width": 12, "code": 8}),
    "signal-teacher": (SignalCNN, {"num_classes": 4, "width": 24}),
    "signal-student": (SignalCNN, {"num_classes": 4, "width": 8}),
    "tokens-teacher": (TokenTransformer, {"num_classes": 5, "dim": 64, "per_token": True}),
    "tokens-student": (TokenConvNet, {"num_classes": 5, "dim": 16, "per_token": True}),
    "tokens-seq-teacher": (TokenConvNet, {"num_classes": 3, "dim": 24, "per_token": False}),
    "tokens-seq-student": (TokenConvNet, {"num_classes": 3, "dim": 8, "per_token": False}),
}

#: built-in dataset -> (teacher arch, student arch, sample shape, sample dtype); UCR series take the signal pair
#: with ``num_classes`` set from the data
TASK_PAIRS: dict[str, tuple[str, str, tuple[int, ...], torch.dtype]] = {
    "mnist-seg": ("seg-teacher", "seg-student", (1, 20, 20), torch.float32),
    "mnist-det": ("det-teacher", "det-student", (1, 32, 32), torch.float32),
    "digits-keypoints": ("keypoints-teacher", "keypoints-student", (1, 32, 32), torch.float32),
    "digits-anomaly": ("ae-teacher", "ae-student", (1, 8, 8), torch.float32),
    "signal-synth": ("signal-teacher", "signal-student", (1, 128), torch.float32),
    "tokens-synth": ("tokens-teacher", "tokens-student", (16,), torch.int64),
    "tokens-seq": ("tokens-seq-teacher", "tokens-seq-student", (16,), torch.int64),
}


def build_arch(name: str, **overrides: Any) -> nn.Module:
    """A fresh ``TASK_ARCHS`` model; ``overrides`` replace default kwargs (e.g. ``num_classes`` for a UCR set)."""
    if name not in TASK_ARCHS:
        from edgekd.errors import SourceError

        raise SourceError(f"unknown task architecture {name!r}; known: {', '.join(TASK_ARCHS)}")
    constructor, defaults = TASK_ARCHS[name]
    return constructor(**{**defaults, **overrides})
