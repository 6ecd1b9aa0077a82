"""BatchNorm over the global batch under DDP, on any device (gloo on CPU included).

Without it each rank normalises with the statistics of its own ``batch_size / N`` samples and updates its
running statistics from them, so the ranks end with different buffers and the model is not the one a
1-process run with the same global batch would train. ``torch.nn.SyncBatchNorm`` fixes that on GPUs only
(its kernels have no CPU implementation), and converting to it replaces modules, which would drop the taps on
them. ``global_batch_norm`` instead swaps the forward of every training-mode BatchNorm layer for the same
computation over all ranks' samples: the batch mean and variance come from two differentiable all-reduces,
so the forward, the gradients and the running statistics are those of the global batch, identical on every rank.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgekd.train.ddp import DistInfo


@contextmanager
def global_batch_norm(model: nn.Module, info: DistInfo) -> Iterator[int]:
    """Every BatchNorm layer of ``model`` normalises over all ranks' batches while inside; yields how many
    layers that is (0 on one process: nothing to synchronise). The layers are restored afterwards."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)] if info.distributed else []
    for layer in layers:
        layer.forward = types.MethodType(_synced_forward, layer)  # an instance attribute: hooks and taps still fire
    try:
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _synced_forward(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``_BatchNorm.forward`` with the batch statistics of every rank's samples (running statistics in eval mode
    stay local: evaluation needs no communication)."""
    if not bn.training:
        return type(bn).forward(bn, x)
    if x.dim() < 2:
        raise ValueError(f"BatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    totals = all_reduce(torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])]))
    count = totals[-1].detach()
    mean = totals[:-1] / count
    centered = x - mean.view(shape)
    var = all_reduce((centered * centered).sum(dims)) / count  # biased: what normalises, as in F.batch_norm
    out = centered * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        _update_running(bn, mean.detach(), var.detach() * count / max(float(count) - 1.0, 1.0))
    return out


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of every rank's loss reaches every rank's input.
    (``torch.distributed.nn.functional.all_reduce`` does the same but is deprecated.)"""

    @staticmethod
    def forward(ctx: object, value: torch.Tensor) -> torch.Tensor:
        out = value.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def all_reduce(value: torch.Tensor) -> torch.Tensor:
    out = _AllReduceSum.apply(value)
    assert isinstance(out, torch.Tensor)
    return out


@torch.no_grad()
def _update_running(bn: _BatchNorm, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
    """The running-statistics update of ``_BatchNorm.forward`` (momentum, or a cumulative mean when it is None)."""
    assert bn.num_batches_tracked is not None and bn.running_mean is not None and bn.running_var is not None
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased_var.to(bn.running_var.dtype), alpha=factor)
