from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekd.artifact import Artifact
from edgekd.config import ExportSettings
from edgekd.errors import ExportError
from edgekd.export import compare_outputs, export_onnx, onnx_outputs, torch_outputs
from edgekd.models import DemoStudent, ResidualCNN


@pytest.mark.parametrize("factory", [DemoStudent, ResidualCNN])
def test_export_parity_and_checks(tmp_path: Path, digits, factory) -> None:
    torch.manual_seed(0)
    art = Artifact("torch", factory().eval())
    out = export_onnx(art, tmp_path / "m.onnx", example=digits.x_test, parity_inputs=digits.x_test)
    assert out.kind == "onnx" and out.path.is_file()
    assert not list(tmp_path.glob("*.data")) and not list(tmp_path.glob(".*tmp*"))
    model = onnx.load(str(out.path))
    assert model.opset_import[0].version >= 17
    assert out.inputs[0].name == "input" and out.inputs[0].shape[1:] == (1, 8, 8)
    assert not isinstance(out.inputs[0].shape[0], int)  # dynamic batch
    parity = out.meta["parity_vs_torch"]
    assert parity["samples"] == 64 and parity["max_abs_error"] < 1e-4 and parity["top1_agreement"] == 1.0
    assert out.history[-1] == "export:torch:ort"
    # batch > 1 runs through the dynamic axis
    assert onnx_outputs(out.path, digits.x_test[:5]).shape == (5, 10)


def test_dynamo_exporter(tmp_path: Path, digits) -> None:
    art = Artifact("torch", DemoStudent().eval())
    out = export_onnx(art, tmp_path / "d.onnx", example=digits.x_test,
                      settings=ExportSettings(exporter="dynamo", opset=18), parity_inputs=digits.x_test[:8])
    assert out.meta["parity_vs_torch"]["max_abs_error"] < 1e-4


def test_export_failure_is_clear_and_leaves_nothing(tmp_path: Path, digits) -> None:
    class Bad(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom in forward")

    with pytest.raises(ExportError, match="export failed.*boom in forward"):
        export_onnx(Artifact("torch", Bad()), tmp_path / "bad.onnx", example=digits.x_test)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ExportError, match="kind 'onnx'"):
        export_onnx(Artifact("onnx", tmp_path / "x.onnx"), tmp_path / "y.onnx", example=digits.x_test)


def test_compare_outputs() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = compare_outputs(ref, ref + np.array([[0.0, 2.0], [0.0, 0.0]]))
    assert res.max_abs_error == 2.0 and res.top1_agreement == 0.5


def test_torch_outputs_batches(digits) -> None:
    model = DemoStudent().eval()
    out = torch_outputs(model, digits.x_test, batch=7)
    with torch.no_grad():
        ref = model(torch.from_numpy(digits.x_test)).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-6)


class _TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU())
        self.a, self.b = torch.nn.Linear(16, 10), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return self.a(f), self.b(f)


def test_multi_output_model_is_a_clear_error_before_anything_is_written(tmp_path: Path, digits) -> None:
    # a tuple of outputs used to export (second output unnamed) and then crash in the parity step
    art = Artifact("torch", _TwoHeads().eval())
    with pytest.raises(ExportError, match="tuple of 2 outputs") as err:
        export_onnx(art, tmp_path / "m.onnx", example=digits.x_test, parity_inputs=digits.x_test[:4])
    assert "one tensor" in err.value.hint
    assert not list(tmp_path.iterdir())
