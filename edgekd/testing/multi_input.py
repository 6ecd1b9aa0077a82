"""Tiny seeded multi-input models and their data (tests/test_multi_input.py): an image + metadata vector
classifier and a token ids + attention mask classifier. Each label needs both inputs, so a model that ignored one
would score near chance."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class ImageMeta(nn.Module):
    """``forward(img, meta)``: a 1 x 8 x 8 image and a 4-value metadata vector -> 4 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.meta_fc = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(16, 4)

    def forward(self, img: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.conv(img), self.meta_fc(meta)], 1))


class TokensMask(nn.Module):
    """``forward(ids, mask)``: int64 token ids and an int64 0/1 attention mask -> 2 classes (masked mean pool)."""

    def __init__(self, vocab: int = 16, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(torch.float32)
        return self.fc((self.emb(ids) * m).sum(1) / m.sum(1).clamp(min=1.0))


def image_meta_data(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(img, meta, y): class = image brightness sign + 2 x metadata sign."""
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    meta = rng.standard_normal((n, 4)).astype(np.float32)
    bright = rng.integers(0, 2, n)
    img += (bright * 2 - 1)[:, None, None, None].astype(np.float32) * 0.8
    return img, meta, (bright + 2 * (meta[:, 0] > 0)).astype(np.int64)


def tokens_mask_data(n: int = 800, length: int = 12, vocab: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, mask, y): padded sequences (id 0 after the length); class = more low ids (1..7) than high among the
    unmasked tokens. Without the mask the padding counts as neither and the length is lost."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (n, length))
    lengths = rng.integers(3, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int64)
    ids = (ids * mask).astype(np.int64)
    y = (((ids >= 1) & (ids <= 7)).sum(1) > (ids >= 8).sum(1)).astype(np.int64)
    return ids, mask, y
