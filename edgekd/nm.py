"""N:M structured sparsity on plain arrays: masks, compliance checks, eligibility.

Torch-free on purpose: the sparsity pass uses it on parameters, and ``edgekd inspect`` and the
linters use it on ONNX initializers (float, or the integer weights behind a DequantizeLinear).

Layout (TensorRT's rule for sparse tensor cores): groups of ``m`` *consecutive input channels*.
Conv weight [K, C, R, S] -> groups along C at every (k, r, s); Linear weight [out, in] -> groups
along ``in``. ``axis`` names the reduction (input-channel) axis, so ONNX MatMul weights
[in, out] use ``axis=0``.

>>> import numpy as np
>>> w = np.array([[0.1, -0.9, 0.5, 0.05, 3.0, 2.0, -1.0, 0.0]], dtype=np.float32)
>>> keep = nm_mask(w, 2, 4)
>>> keep.astype(int).tolist()
[[0, 1, 1, 0, 1, 1, 0, 0]]
>>> check_nm(w * keep, 2, 4).compliant
True
>>> check_nm(w, 2, 4).groups_ok, check_nm(w, 2, 4).groups
(0, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _grouped(values: np.ndarray, m: int, axis: int) -> np.ndarray:
    """View ``values`` as [..., C/m, m] with the input-channel axis last (copy if needed)."""
    moved = np.moveaxis(values, axis, -1)
    c = moved.shape[-1]
    if c % m:
        raise ValueError(f"input-channel axis has {c} entries, not a multiple of {m}")
    return moved.reshape(*moved.shape[:-1], c // m, m)


def nm_mask(weight: np.ndarray, n: int = 2, m: int = 4, axis: int = 1) -> np.ndarray:
    """Boolean keep-mask with the ``n`` largest-magnitude entries of every group of ``m``.

    Ties break towards the lower channel index (stable sort), so the mask is deterministic.
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= m, got {n}:{m}")
    w = np.asarray(weight)
    groups = _grouped(np.abs(w.astype(np.float64)), m, axis)
    # rank within each group: argsort of descending magnitude, stable
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    moved_shape = np.moveaxis(w, axis, -1).shape
    return np.moveaxis(keep.reshape(moved_shape), -1, axis)


@dataclass(frozen=True)
class NMCheck:
    """How well one weight follows the N:M rule (``groups_ok`` of ``groups`` have <= n nonzeros)."""

    n: int
    m: int
    groups: int
    groups_ok: int
    zeros: int
    size: int

    @property
    def compliant(self) -> bool:
        return self.groups > 0 and self.groups_ok == self.groups

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "m": self.m, "groups": self.groups, "groups_ok": self.groups_ok,
                "compliant": self.compliant, "sparsity": round(self.sparsity, 6)}


def check_nm(weight: np.ndarray, n: int = 2, m: int = 4, axis: int = 1) -> NMCheck:
    """Count groups of ``m`` along ``axis`` holding at most ``n`` nonzeros (exact zeros only)."""
    w = np.asarray(weight)
    nonzero = _grouped(w != 0, m, axis)
    per_group = nonzero.sum(axis=-1)
    return NMCheck(n=n, m=m, groups=int(per_group.size), groups_ok=int((per_group <= n).sum()),
                   zeros=int(w.size - np.count_nonzero(w)), size=int(w.size))


def ineligible_reason(shape: tuple[int, ...], *, m: int = 4, axis: int = 1, groups: int = 1,
                      allow_grouped: bool = False) -> str | None:
    """Why a weight cannot carry an N:M pattern for sparse tensor cores, or None if it can.

    ``shape`` is the weight's shape; ``groups`` the conv's group count ([K, C/groups, R, S]).

    >>> ineligible_reason((64, 3, 7, 7))
    'input channels 3 not a multiple of 4'
    >>> ineligible_reason((32, 1, 3, 3), groups=32)
    'depthwise conv (groups=32)'
    >>> ineligible_reason((128, 256)) is None
    True
    """
    if len(shape) < 2:
        return f"weight has rank {len(shape)} (need >= 2)"
    if groups > 1:
        if shape[axis] == 1:
            return f"depthwise conv (groups={groups})"
        if not allow_grouped:
            return f"grouped conv (groups={groups}); TensorRT sparse kernels need groups=1"
    c = shape[axis]
    if c % m:
        return f"input channels {c} not a multiple of {m}"
    return None
