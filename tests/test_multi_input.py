"""Models with several named inputs (edgekd/inputs.py), end to end: data (npz ``x_<name>``, a dict of arrays), training
through ``model(*inputs)``, one ONNX graph input per name, int8 that calibrates float inputs only, golden
``input#<name>`` / eval ``x_<name>``, the runtime, ``edgekd check``; and the refusals before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekd.data import DataSplits, load_data
from edgekd.errors import ConfigError, EdgekdError, SourceError
from edgekd.hil import CheckOptions, run_checks
from edgekd.inputs import from_npz
from edgekd.pipeline import CompressOptions, compress
from edgekd.testing.multi_input import ImageMeta, TokensMask, image_meta_data, tokens_mask_data

TARGETS = ["cpu", "openvino-cpu"]


def _recipe(tmp_path: Path, int8: bool, epochs: int = 8) -> Path:
    """Distillation with labels only (no teacher needed), then INT8 PTQ when ``int8``."""
    text = f'name = "mi"\n[[passes]]\nname = "distill"\nloss = "ce"\nepochs = {epochs}\nlr = 1e-2\n'
    if int8:
        text += '[[passes]]\nname = "quantize"\nmode = "ptq"\nweight_bits = 8\n'
    path = tmp_path / ("mi-int8.toml" if int8 else "mi.toml")
    path.write_text(text)
    return path


def _image_meta_npz(tmp_path: Path, **override: np.ndarray) -> Path:
    img, meta, y = image_meta_data()
    arrays = {"x_img": img, "x_meta": meta, "y": y, **override}
    path = tmp_path / "imgmeta.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _graph_inputs(path: Path) -> list[tuple[str, int, list]]:
    model = onnx.load(str(path))
    return [(i.name, i.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in model.graph.input]


def test_image_and_metadata_int8_on_cpu_and_openvino(tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = tmp_path / "b"
    report = compress(ImageMeta(), data=str(_image_meta_npz(tmp_path)), recipe=str(_recipe(tmp_path, int8=True)),
                      targets=TARGETS, out=out, options=CompressOptions(measure=False))
    fp32 = report["accuracy"]["fp32_reference"]
    assert fp32 > 75, report["accuracy"]  # 4 classes: chance is 25 %, and each input alone gives at most 50 %
    for name in TARGETS:
        entry = report["targets"][name]
        assert entry["status"] == "passed", entry.get("reasons")
        assert entry["build"]["precision"] == "int8", entry["build"]
        assert entry["accuracy"] >= fp32 - 3, (name, entry["accuracy"], fp32)
    # one graph input per name, each float32 with a dynamic batch axis, each quantized (both are float inputs)
    assert _graph_inputs(out / "model.onnx") == [("img", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8]),
                                                 ("meta", onnx.TensorProto.FLOAT, ["batch", 4])]
    quantized = {n.input[0] for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "QuantizeLinear"}
    assert {"img", "meta"} <= quantized
    golden, ev = np.load(out / "golden.npz"), np.load(out / "eval.npz")
    assert {"input#img", "input#meta", "reference"} <= set(golden) and "input" not in golden
    assert {"x_img", "x_meta", "y"} <= set(ev) and "x" not in ev

    from edgekd import runtime

    for name in TARGETS:
        model = runtime.load(out, name)
        got = model.infer({"img": golden["input#img"][:5], "meta": golden["input#meta"][:5]})["logits"]
        np.testing.assert_allclose(got, golden["reference"][:5], atol=1e-3)
        # predict_all takes a dict for a multi-input model; one array is refused, naming the inputs
        assert model.predict_all({"img": ev["x_img"], "meta": ev["x_meta"]})["logits"].shape == (len(ev["y"]), 4)
        with pytest.raises(EdgekdError, match="2 inputs .img, meta."):
            model.predict_all(ev["x_img"])
        with pytest.raises(EdgekdError, match="'meta' is float64"):
            model.infer({"img": golden["input#img"][:2], "meta": golden["input#meta"][:2].astype(np.float64)})
        checks = run_checks(out, CheckOptions(target=name, iterations=20, warmup=1))
        assert checks.passed, [(r.name, r.status, r.detail if hasattr(r, "detail") else "") for r in checks.results]
        assert checks.result("golden_parity").status == "passed"
        assert checks.result("accuracy").status == "passed"
    # --data with x_<name> arrays (saved in another order, float64 metadata): fed by name, converted once
    img, meta, y = image_meta_data(n=200, seed=1)
    np.savez(tmp_path / "other.npz", x_meta=meta.astype(np.float64), x_img=img, y=y)
    acc = run_checks(out, CheckOptions(target="cpu", data=str(tmp_path / "other.npz")), checks=("accuracy",))
    assert acc.result("accuracy").status == "passed" and "other.npz" in str(acc.to_dict())


def test_token_ids_and_mask_stay_integer_through_int8(tmp_path: Path) -> None:
    ids, mask, y = tokens_mask_data()
    data = DataSplits("tokens", {"ids": ids[:600], "mask": mask[:600]}, y[:600],
                      {"ids": ids[600:], "mask": mask[600:]}, y[600:])
    torch.manual_seed(0)
    out = tmp_path / "b"
    report = compress(TokensMask(), data=data, recipe=str(_recipe(tmp_path, int8=True)), targets=TARGETS, out=out,
                      options=CompressOptions(measure=False))
    fp32 = report["accuracy"]["fp32_reference"]
    assert fp32 > 80, report["accuracy"]  # the majority class is 65 %
    for name in TARGETS:
        entry = report["targets"][name]
        assert entry["status"] == "passed", entry.get("reasons")
        assert entry["build"]["precision"] == "int8"
        assert entry["accuracy"] >= fp32 - 3
    # integer inputs keep int64 and get no input quantizer: ids go to the embedding's Gather, the mask stays 0/1
    assert _graph_inputs(out / "model.onnx") == [("ids", onnx.TensorProto.INT64, ["batch", 12]),
                                                 ("mask", onnx.TensorProto.INT64, ["batch", 12])]
    consumers = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node if {"ids", "mask"} & set(n.input)}
    assert "QuantizeLinear" not in consumers and "Gather" in consumers
    from edgekd import runtime

    golden = np.load(out / "golden.npz")
    assert golden["input#ids"].dtype == np.int64 and golden["input#mask"].dtype == np.int64
    model = runtime.load(out, "openvino-cpu")
    got = model.infer({"ids": golden["input#ids"], "mask": golden["input#mask"]})["logits"]
    assert (got.argmax(1) == golden["reference"].argmax(1)).mean() >= 0.95
    checks = run_checks(out, CheckOptions(target="cpu", iterations=20, warmup=1))
    assert checks.passed, [(r.name, r.status) for r in checks.results]
    # edgekd profile feeds golden.npz's input#ids / input#mask (real token ids, not zeros) to every input
    from edgekd.cli import main
    from edgekd.profiler.measure import make_feeds

    feeds = make_feeds(model.inputs, 4, from_npz(dict(golden), "input", "#")[:1])
    assert set(feeds) == {"ids", "mask"} and (feeds["ids"] == golden["input#ids"][:1]).all()
    assert main(["profile", str(out), "--target", "cpu", "--out", str(tmp_path / "prof"), "--iterations", "20",
                 "--no-plots"]) == 0


def test_input_names_follow_the_forward_signature_not_the_file_order(tmp_path: Path) -> None:
    """npz keys are sorted by nothing the model knows: x_meta saved first still feeds forward(img, meta) as meta."""
    img, meta, y = image_meta_data(n=300)
    path = tmp_path / "rev.npz"
    np.savez(path, x_meta=meta, x_img=img, y=y)
    torch.manual_seed(0)
    report = compress(ImageMeta(), data=str(path), recipe=str(_recipe(tmp_path, int8=False, epochs=1)),
                      targets=["cpu"], out=tmp_path / "b", options=CompressOptions(measure=False))
    assert [i["name"] for i in report["data"]["inputs"]] == ["img", "meta"]
    assert [name for name, _, _ in _graph_inputs(tmp_path / "b" / "model.onnx")] == ["img", "meta"]


def test_data_mismatches_are_named_before_training(tmp_path: Path) -> None:
    img, meta, y = image_meta_data(n=300)
    recipe = str(_recipe(tmp_path, int8=False, epochs=1))

    def run(path: Path) -> None:
        compress(ImageMeta(), data=str(path), recipe=recipe, targets=["cpu"], out=tmp_path / "b",
                 options=CompressOptions(measure=False))

    np.savez(tmp_path / "missing.npz", x_img=img, y=y)
    with pytest.raises(SourceError, match=r"missing: x_meta"):
        run(tmp_path / "missing.npz")
    np.savez(tmp_path / "count.npz", x_img=img, x_meta=meta[:250], y=y)
    with pytest.raises(SourceError, match=r"different sample counts: x_img 300, x_meta 250"):
        load_data(str(tmp_path / "count.npz"))
    np.savez(tmp_path / "one.npz", x=img, y=y)
    with pytest.raises(SourceError, match=r"takes 2 inputs \(img, meta\) but the data is one array"):
        run(tmp_path / "one.npz")
    np.savez(tmp_path / "typo.npz", x_image=img, x_meta=meta, y=y)
    with pytest.raises(SourceError, match=r"missing: x_img; not an input: x_image"):
        run(tmp_path / "typo.npz")
    # a split whose input has another dtype than the training split's (token ids saved as float in one file)
    ids, mask, yt = tokens_mask_data(n=200)
    np.savez(tmp_path / "dtype.npz", x_train_ids=ids[:150], x_train_mask=mask[:150], y_train=yt[:150],
             x_test_ids=ids[150:].astype(np.float32), x_test_mask=mask[150:], y_test=yt[150:])
    with pytest.raises(SourceError, match=r"train input 'ids' samples are int64 but test input 'ids' samples are float32"):
        load_data(str(tmp_path / "dtype.npz"))
    assert not (tmp_path / "b").exists()


def test_a_plain_dict_of_arrays_is_data_too(tmp_path: Path) -> None:
    """compress(data={"x": {name: array}, "y": labels}): split 80/20 like an npz, each input keeps its dtype."""
    ids, mask, y = tokens_mask_data(n=300)
    torch.manual_seed(0)
    report = compress(TokensMask(), data={"x": {"ids": ids, "mask": mask}, "y": y},
                      recipe=str(_recipe(tmp_path, int8=False, epochs=1)), targets=["cpu"], out=tmp_path / "b",
                      options=CompressOptions(measure=False))
    assert report["data"]["train"] + report["data"]["test"] == 300 and report["data"]["test"] == 60
    assert report["data"]["inputs"] == [{"name": "ids", "dtype": "int64", "shape": [12]},
                                        {"name": "mask", "dtype": "int64", "shape": [12]}]
    # token ids saved as float: the dry run before training names each input's dtype
    with pytest.raises(SourceError, match=r"ids \[12\] float32, mask \[12\] int64: RuntimeError"):
        compress(TokensMask(), data={"x": {"ids": ids.astype(np.float32), "mask": mask}, "y": y}, recipe="fp32",
                 out=tmp_path / "c", options=CompressOptions(measure=False))
    with pytest.raises(SourceError, match=r"different sample counts: x_ids 300, x_mask 299"):
        compress(TokensMask(), data={"x": {"ids": ids, "mask": mask[:-1]}, "y": y}, recipe="fp32",
                 out=tmp_path / "c", options=CompressOptions(measure=False))


def test_user_given_input_names_map_the_data_to_a_star_args_model(tmp_path: Path) -> None:
    class StarArgs(ImageMeta):
        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            return super().forward(*xs)

    img, meta, y = image_meta_data(n=300)
    path = tmp_path / "d.npz"
    np.savez(path, x_meta=meta, x_img=img, y=y)
    torch.manual_seed(0)
    report = compress(StarArgs(), data=str(path), recipe=str(_recipe(tmp_path, int8=False, epochs=1)), targets=["cpu"],
                      out=tmp_path / "b", options=CompressOptions(measure=False, input_names=("img", "meta")))
    assert report["targets"]["cpu"]["status"] == "passed"
    assert [name for name, _, _ in _graph_inputs(tmp_path / "b" / "model.onnx")] == ["img", "meta"]


def test_fpga_targets_refuse_several_inputs_before_training(tmp_path: Path) -> None:
    from edgekd.config import load_recipe, load_target
    from edgekd.inputs import ModelInputs
    from edgekd.preflight import check_before_training

    img, meta, _ = image_meta_data(n=300)
    recipe = load_recipe(str(_recipe(tmp_path, int8=True, epochs=1)))
    x = ModelInputs({"img": img[:4], "meta": meta[:4]})
    for target, engine in (("fpga-artix7", "HLS"), ("fpga-xc7-rtl", "RTL")):
        with pytest.raises(ConfigError, match=rf"2 inputs \(img, meta\); the {engine} engine streams one input"):
            check_before_training(recipe, [load_target(target)], ImageMeta(), x)
    # through compress (the HLS backend needs only g++): refused before any pass ran
    with pytest.raises(ConfigError, match="nothing was trained"):
        compress(ImageMeta(), data=str(_image_meta_npz(tmp_path)), recipe=str(_recipe(tmp_path, int8=True)),
                 targets=["cpu", "fpga-artix7"], out=tmp_path / "b", options=CompressOptions(measure=False))
    assert not (tmp_path / "b").exists()


def test_channel_pruning_of_a_multi_input_model_is_refused_before_training(tmp_path: Path) -> None:
    recipe = tmp_path / "prune.toml"
    recipe.write_text('name = "p"\n[[passes]]\nname = "prune_channels"\nratio = 0.5\n'
                      '[[passes]]\nname = "distill"\nloss = "ce"\nepochs = 1\n')
    with pytest.raises(ConfigError, match=r"prune_channels pass takes single-input models only; this model has 2 "
                                          r"inputs \(img, meta\)"):
        compress(ImageMeta(), data=str(_image_meta_npz(tmp_path)), recipe=str(recipe), targets=["cpu"],
                 out=tmp_path / "b", options=CompressOptions(measure=False))
    assert not (tmp_path / "b").exists()


def test_search_refuses_a_multi_input_model_before_any_training() -> None:
    from edgekd.budgets import parse_search_budget
    from edgekd.search.run import SearchOptions, _prepare

    img, meta, y = image_meta_data(n=600)
    data = DataSplits("im", {"img": img[:500], "meta": meta[:500]}, y[:500], {"img": img[500:], "meta": meta[500:]},
                      y[500:])
    with pytest.raises(EdgekdError, match=r"edgekd search takes single-input models; the data has 2 inputs \(img, meta\)"):
        _prepare(ImageMeta(), data, "cpu", SearchOptions(budgets=(parse_search_budget("macs=1000"),)))


def test_distillation_with_hints_and_2_4_sparsity_take_several_inputs(tmp_path: Path) -> None:
    """The teacher is fed ``teacher(*inputs)`` (soft targets and a FitNets hint), and sparsify traces the layer order
    with both inputs: the classifier is found last and skipped, the metadata layer gets its 2:4 mask."""
    recipe = tmp_path / "kd.toml"
    recipe.write_text('name = "kd-mi"\n[[passes]]\nname = "distill"\nloss = "hinton"\nepochs = 2\nlr = 1e-2\n'
                      'features = ["conv.0:conv.0"]\n[[passes]]\nname = "sparsify"\n'
                      '[[passes]]\nname = "distill"\nloss = "hinton"\nepochs = 1\n')
    torch.manual_seed(1)
    teacher = ImageMeta()
    torch.manual_seed(0)
    report = compress(ImageMeta(), teacher=teacher, data=str(_image_meta_npz(tmp_path)), recipe=str(recipe),
                      targets=["cpu"], out=tmp_path / "b", options=CompressOptions(measure=False))
    assert report["passes"]["sparsify"]["layers"] == ["meta_fc.0"]
    assert "classifier" in report["passes"]["sparsify"]["skipped"]["head"]
    assert report["targets"]["cpu"]["status"] == "passed"


def test_optional_forward_parameters_are_filled_by_position() -> None:
    """forward(input_ids, attention_mask=None, token_type_ids=None): the data fills a prefix of the parameters, since
    model(*inputs) passes them by position; skipping one is refused with the prefix to give."""
    from edgekd.inputs import ModelInputs, order_for

    class HFLike(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
            return input_ids

    ids = np.zeros((2, 3), np.int64)
    ordered = order_for(HFLike(), ModelInputs({"attention_mask": ids, "input_ids": ids}), "model m", "d.npz")
    assert ordered.names == ("input_ids", "attention_mask")
    with pytest.raises(SourceError, match=r"after a parameter left out: x_token_type_ids") as err:
        order_for(HFLike(), ModelInputs({"input_ids": ids, "token_type_ids": ids}), "model m", "d.npz")
    assert "x_input_ids, x_attention_mask, x_token_type_ids" in str(err.value)
