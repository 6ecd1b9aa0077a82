"""Tiny seeded models and ONNX Runtime QDQ files for the tests and the HLS benchmark.

``ort_qdq`` trains a builtin architecture for a few epochs on digits (through ``fine_tune``), exports it and
quantizes it with ONNX Runtime's ``quantize_static`` -- a QDQ file made by another tool than edgekd.
``AllOps`` exercises every op the HLS front end supports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class AllOps(nn.Module):
    """Conv+ReLU6, depthwise strided conv, AveragePool(pad), Concat, 1x1 conv, MaxPool, Conv1d, MatMul, Gemm."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.pw = nn.Conv2d(16, 16, 1)
        self.conv1d = nn.Conv1d(16, 8, 3, padding=1)
        self.w = nn.Parameter(torch.randn(32, 16) * 0.2)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.conv(x))
        d = F.relu(self.dw(x))
        x = torch.cat([d, self.avg(d)], dim=1)
        x = F.max_pool2d(F.relu(self.pw(x)), 2)
        x = F.relu(self.conv1d(x.reshape(-1, 16, 4)))
        x = F.relu(x.flatten(1) @ self.w)
        return self.fc(x)


def make_module(arch: str, seed: int = 0) -> nn.Module:
    from edgekd.models import DemoStudent, ResidualCNN, TinyMLP

    torch.manual_seed(seed)
    return {"student": lambda: DemoStudent(1, 10, image_size=8), "residual": lambda: ResidualCNN(1, 10, width=8),
            "mlp": lambda: TinyMLP(64, 32, 10), "allops": AllOps}[arch]()


def train_briefly(module: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 4, seed: int = 0) -> nn.Module:
    """A few epochs of cross-entropy (AdamW, constant lr 3e-3) so activations have realistic ranges (seconds on digits)."""
    from edgekd.data import DataSplits
    from edgekd.train import FinetuneConfig, fine_tune

    labels = np.asarray(y, dtype=np.int64)
    data = DataSplits("train", x, labels, x[:0], None, int(labels.max()) + 1)
    config = FinetuneConfig(epochs=epochs, batch_size=64, lr=3e-3, schedule="constant", loss="ce", seed=seed)
    return fine_tune(module, None, data, config, description=f"training {type(module).__name__}").model


def export_float(module: nn.Module, path: Path, example: np.ndarray) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.from_numpy(example[:1]),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def ort_quantize(float_path: Path, out_path: Path, calib: np.ndarray, *, activations: str = "int8",
                 weights: str = "int8", per_channel: bool = True, extra: dict[str, Any] | None = None,
                 exclude: list[str] | None = None) -> Path:
    """ONNX Runtime ``quantize_static`` in QDQ format (``exclude``: node names left in float)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's pre-processing advice
    quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=qtype[activations], weight_type=qtype[weights], extra_options=extra or {},
                    nodes_to_exclude=exclude or [])
    return out_path


def ort_qdq(arch: str, workdir: Path, *, epochs: int = 4, seed: int = 0, **quant: Any) -> tuple[Path, Any]:
    """Train ``arch`` on digits, export, quantize with ORT; returns (qdq path, data splits)."""
    from edgekd.data import load_data

    data = load_data("builtin:digits")
    module = train_briefly(make_module(arch, seed), data.x_train, data.y_train, epochs=epochs, seed=seed)
    tag = "_".join(f"{k}-{v}" for k, v in sorted(quant.items()) if k != "extra")
    float_path = export_float(module, workdir / f"{arch}.onnx", data.x_test)
    return ort_quantize(float_path, workdir / f"{arch}_{tag or 'default'}.qdq.onnx", data.x_train[:128], **quant), data
