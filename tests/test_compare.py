"""`edgekd compare`: one bare ONNX file on ONNX Runtime and OpenVINO, output by output; `--inputs` for compare,
profile and check. Tiny real ONNX files built with onnx.helper (and ORT's quantize_static for the QDQ one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.cli import main

RNG = np.random.default_rng(0)


def _save(nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray], path: Path) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compare")
    f32 = np.float32
    two = _save([helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["logits"]),
                 helper.make_node("MatMul", ["x", "W2"], ["emb"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10]),
                 helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["N", 3])],
                {"W": RNG.standard_normal((16, 10)).astype(f32), "B": RNG.standard_normal(10).astype(f32),
                 "W2": RNG.standard_normal((16, 3)).astype(f32)}, d / "two.onnx")
    # token ids + mask: Gather of an embedding table, masked, summed over the sequence, a linear head
    text = _save([helper.make_node("Gather", ["E", "ids"], ["e"]),
                  helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
                  helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]), helper.make_node("Mul", ["e", "m3"], ["em"]),
                  helper.make_node("ReduceSum", ["em", "ax1"], ["pooled"], keepdims=0),
                  helper.make_node("MatMul", ["pooled", "H"], ["logits"])],
                 [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 8]),
                  helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", 8])],
                 [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
                 {"E": RNG.standard_normal((50, 6)).astype(f32), "H": RNG.standard_normal((6, 4)).astype(f32),
                  "ax": np.array([2], np.int64), "ax1": np.array([1], np.int64)}, d / "text.onnx")
    flt = _save([helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["a"]),
                 helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["logits"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                {"W": RNG.standard_normal((64, 32)).astype(f32), "B": RNG.standard_normal(32).astype(f32),
                 "W2": RNG.standard_normal((32, 10)).astype(f32)}, d / "mlp.onnx")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"x": RNG.standard_normal((1, 64)).astype(f32)} for _ in range(32)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    qdq = d / "mlp.qdq.onnx"
    quantize_static(str(flt), str(qdq), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return {"two": two, "text": text, "qdq": qdq}


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def test_float_model_cpu_vs_openvino_passes_per_output(models: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r.json"
    assert main(["compare", str(models["two"]), "--target", "cpu", "--target", "openvino-cpu", "--batch", "4",
                 "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["schema"] == "edgekd.compare/1" and doc["passed"] and doc["reference"]["target"] == "cpu"
    assert doc["inputs"]["seed"] == 0 and doc["inputs"]["inputs"]["x"]["shape"] == [4, 16]
    (ov,) = doc["targets"]
    assert ov["target"] == "openvino-cpu" and ov["status"] == "passed"
    assert [o["name"] for o in ov["outputs"]] == ["logits", "emb"]  # every output judged on its own
    assert all(o["max_abs_error"] < 1e-3 and o["rule"].startswith("|err| <= atol 0.05") for o in ov["outputs"])
    out = capsys.readouterr().out
    assert "openvino-cpu  logits" in out and "openvino-cpu  emb" in out and "reference cpu (onnxruntime)" in out


def test_qdq_model_gets_the_output_step_allowance_and_fails_at_tight_atol(models: dict[str, Path], tmp_path: Path
                                                                         ) -> None:
    from edgekd.parity import quantized_output_steps

    step = quantized_output_steps(models["qdq"])["logits"]
    assert step > 0  # the output is produced by a DequantizeLinear
    loose, tight = tmp_path / "loose.json", tmp_path / "tight.json"
    args = ["compare", str(models["qdq"]), "--target", "cpu", "--target", "openvino-cpu", "--batch", "8"]
    assert main([*args, "--json", str(loose)]) == 0
    (out,) = json.loads(loose.read_text())["targets"][0]["outputs"]
    assert out["output_step"] == pytest.approx(step) and "(output step)" in out["rule"]
    code = main([*args, "--atol", "0", "--rtol", "0", "--output-steps", "0", "--json", str(tight)])
    (t,) = json.loads(tight.read_text())["targets"]
    err = t["outputs"][0]["max_abs_error"]
    if err == 0:
        pytest.skip("ONNX Runtime and OpenVINO agree bit for bit on this host: nothing to fail at atol 0")
    assert code == 1 and t["status"] == "failed" and "--atol" in t["tolerance_source"]
    assert "samples outside |err| <= atol 0 + rtol 0" in t["outputs"][0]["failures"][0]


def test_inputs_file_is_what_runs(models: dict[str, Path], tmp_path: Path) -> None:
    ids = RNG.integers(0, 50, (3, 8)).astype(np.int64)
    mask = (RNG.random((3, 8)) > 0.3).astype(np.int64)
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, ids=ids, mask=mask)
    saved, report = tmp_path / "out.npz", tmp_path / "r.json"
    assert main(["compare", str(models["text"]), "--target", "cpu", "--target", "openvino-cpu", "--inputs", str(feeds),
                 "--save-outputs", str(saved), "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["inputs"]["source"] == "--inputs feeds.npz" and "seed" not in doc["inputs"]
    assert doc["inputs"]["inputs"]["ids"] == {"shape": [3, 8], "dtype": "int64"}
    with np.load(saved) as arrays:
        np.testing.assert_array_equal(arrays["input/ids"], ids)  # token ids kept, never zeros
        expected = _ort(models["text"], {"ids": ids, "mask": mask})["logits"]
        np.testing.assert_allclose(arrays["cpu/logits"], expected, rtol=1e-6)
        np.testing.assert_allclose(arrays["openvino-cpu/logits"], expected, rtol=1e-4, atol=1e-5)
    # and the generated default differs from them (zeros for integer inputs)
    assert main(["compare", str(models["text"]), "--target", "openvino-cpu", "--save-outputs", str(saved)]) == 0
    with np.load(saved) as arrays:
        assert not arrays["input/ids"].any() and arrays["input/ids"].dtype == np.int64


@pytest.mark.parametrize(("arrays", "message"), [
    ({"ids": np.zeros((2, 8), np.int64)}, "missing mask"),
    ({"ids": np.zeros((2, 8), np.int64), "mask": np.ones((2, 8), np.int64), "extra": np.zeros(2)},
     "not model inputs: extra"),
    ({"ids": np.zeros((2, 5), np.int64), "mask": np.ones((2, 5), np.int64)},
     "input 'ids': the model expects shape ('?', 8) int64, the file holds shape (2, 5) int64"),
    ({"ids": np.zeros((2, 8), np.float32), "mask": np.ones((2, 8), np.int64)},
     "input 'ids': the model expects shape ('?', 8) int64, the file holds shape (2, 8) float32"),
    ({"ids": np.zeros((2, 8), np.int64), "mask": np.ones((3, 8), np.int64)}, "different batch sizes"),
])
def test_inputs_that_do_not_fit_are_usage_errors(models: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], arrays: dict, message: str) -> None:
    feeds = tmp_path / "bad.npz"
    np.savez(feeds, **arrays)
    assert main(["compare", str(models["text"]), "--target", "openvino-cpu", "--inputs", str(feeds)]) == 2
    err = capsys.readouterr().err
    assert message in err and f"--inputs {feeds}" in err


def test_usage_errors(models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(models["two"]), "--target", "cpu", "--target", "openvino-cpuu"]) == 2
    err = capsys.readouterr().err
    assert "unknown target 'openvino-cpuu'; known:" in err and "openvino-cpu" in err
    text = tmp_path / "notes.onnx"
    text.write_text("hello\n")
    assert main(["compare", str(text), "--target", "openvino-cpu"]) == 2
    assert "this is a text file" in capsys.readouterr().err
    assert main(["compare", str(models["two"]), "--target", "cpu"]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    assert main(["compare", str(models["two"]), "--target", "openvino-cpu", "--class-axis", "nope=1"]) == 2
    assert "the model's outputs: logits, emb" in capsys.readouterr().err


def test_class_axis_none_judges_elementwise_only(models: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert main(["compare", str(models["two"]), "--target", "openvino-cpu", "--class-axis", "emb=none",
                 "--min-top1", "1", "--json", str(report)]) == 0
    doc = json.loads(report.read_text())
    assert doc["targets"][0]["tolerances"]["min_top1_agreement"] == 1.0  # a bare 1 is the fraction, 100 %
    assert doc["class_axes"] == {"logits": 1, "emb": None}
    emb = doc["targets"][0]["outputs"][1]
    assert emb["top1_agreement"] is None and "continuous output" in emb["rule"]


# ---------------------------------------------------------------- --inputs for profile and check


def test_profile_inputs_are_fed_and_reported(models: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ids = RNG.integers(1, 50, (2, 8)).astype(np.int32)  # int32 ids narrowed to the model's int64, values kept
    feeds = tmp_path / "tokens.npz"
    np.savez(feeds, ids=ids, mask=np.ones((2, 8), np.int64))
    out = tmp_path / "prof"
    assert main(["profile", str(models["text"]), "--target", "cpu", "--inputs", str(feeds), "--out", str(out),
                 "--iterations", "20", "--warmup", "2", "--no-plots", "--no-layers"]) == 0
    assert "inputs: --inputs tokens.npz: ids [2, 8] int64, mask [2, 8] int64" in capsys.readouterr().out
    doc = json.loads((out / "profile.json").read_text())
    assert doc["inputs"]["source"] == "--inputs tokens.npz" and doc["settings"]["batch_size"] == 2
    assert doc["single_stream"]["batch_size"] == 2
    assert "--inputs tokens.npz" in (out / "profile.md").read_text()
    # --batch cycles the file's rows
    assert main(["profile", str(models["text"]), "--target", "cpu", "--inputs", str(feeds), "--out", str(out),
                 "--batch", "5", "--iterations", "20", "--warmup", "2", "--no-plots", "--no-layers"]) == 0
    assert json.loads((out / "profile.json").read_text())["inputs"]["inputs"]["ids"]["shape"] == [5, 8]


def test_profile_single_input_accepts_key_x_and_refuses_a_bad_shape(models: dict[str, Path], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "x.npz", tmp_path / "bad.npz"
    np.savez(good, x=RNG.standard_normal((1, 16)))  # float64: narrowed to float32
    np.savez(bad, x=np.zeros((1, 15), np.float32))
    common = ["--target", "cpu", "--out", str(tmp_path / "p"), "--iterations", "20", "--warmup", "2", "--no-plots",
              "--no-layers"]
    assert main(["profile", str(models["two"]), "--inputs", str(good), *common]) == 0
    capsys.readouterr()
    assert main(["profile", str(models["two"]), "--inputs", str(bad), *common]) == 2
    err = capsys.readouterr().err
    assert "input 'x': the model expects shape ('?', 16) float32, the file holds shape (1, 15) float32" in err


def test_compare_runs_without_torch(models: dict[str, Path]) -> None:
    """A device-side command: the base install (no [train] extra) compares runtimes."""
    import subprocess
    import sys

    code = ("import sys; from edgekd.cli import main; "
            f"rc = main(['compare', {str(models['two'])!r}, '--target', 'openvino-cpu', '-q']); "
            "print('TORCH', 'torch' in sys.modules, rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parents[1])
    assert "TORCH False 0" in proc.stdout, proc.stdout + proc.stderr
