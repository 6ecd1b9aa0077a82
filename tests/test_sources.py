from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.data import load_data
from edgekd.errors import SourceError
from edgekd.models import DemoStudent, load_model, save_checkpoint


def test_builtin_digits_split(digits) -> None:
    # 1297 training samples: 200 of them held out as the validation split
    assert digits.x_train.shape == (1097, 1, 8, 8) and digits.x_val.shape == (200, 1, 8, 8)
    assert digits.x_test.shape == (500, 1, 8, 8) and digits.validation["samples"] == 200
    assert digits.x_train.dtype == np.float32 and digits.x_val.dtype == np.float32 and digits.num_classes == 10
    assert digits.x_train.min() >= 0.0 and digits.x_train.max() <= 1.0
    again = load_data("builtin:digits")
    np.testing.assert_array_equal(again.y_test, digits.y_test)  # fixed split
    np.testing.assert_array_equal(again.x_val, digits.x_val)


def test_builtin_mnist5k() -> None:
    data = load_data("builtin:mnist5k")
    assert data.x_train.shape == (3600, 1, 28, 28) and data.x_val.shape == (400, 1, 28, 28)  # 4000 train: 10 % held out
    assert data.x_test.shape == (1000, 1, 28, 28)


def test_npz_source_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = tmp_path / "good.npz"
    np.savez(good, x=rng.random((20, 1, 4, 4), dtype=np.float32), y=np.arange(20) % 3)
    data = load_data(f"npz:{good}")
    assert len(data.x_train) + len(data.x_test) == 20 and data.num_classes == 3

    bad_len = tmp_path / "bad_len.npz"
    np.savez(bad_len, x=np.zeros((5, 2), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(SourceError, match="x has 5 samples but y has 4"):
        load_data(f"npz:{bad_len}")

    no_x = tmp_path / "no_x.npz"
    np.savez(no_x, inputs=np.zeros((5, 2)))
    with pytest.raises(SourceError, match=r"no array named 'x' \(found: inputs\)"):
        load_data(f"npz:{no_x}")

    neg = tmp_path / "neg.npz"
    np.savez(neg, x_train=np.zeros((4, 2), np.float32), y_train=np.array([0, 1, -1, 0]),
             x_test=np.zeros((2, 2), np.float32), y_test=np.array([0, 1]))
    with pytest.raises(SourceError, match="y_train has negative class id -1"):
        load_data(f"npz:{neg}")

    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.full((4, 2), np.nan, np.float32))
    with pytest.raises(SourceError, match="NaN"):
        load_data(f"npz:{nan}")

    with pytest.raises(SourceError, match="npz file not found"):
        load_data(f"npz:{tmp_path / 'missing.npz'}")


def test_labels_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "l.npz"
    np.savez(path, x=np.zeros((10, 2), np.float32), y=np.arange(10), labels=np.array(["a", "b"]))
    with pytest.raises(SourceError, match="class id .* but num_classes is 2"):
        load_data(f"npz:{path}")


def test_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((6, 5), 40 * i, np.uint8), mode="L").save(tmp_path / cls / f"{i}.png")
    data = load_data(f"imagefolder:{tmp_path}")
    assert data.labels == ("cat", "dog") and data.input_shape == (1, 6, 5)
    resized = load_data(f"imagefolder:{tmp_path}?size=4x4")
    assert resized.input_shape == (1, 4, 4)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match="broken.png"):
        load_data(f"imagefolder:{tmp_path}")


def test_py_and_random_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = tmp_path / "mydata.py"
    mod.write_text("import numpy as np\ndef make():\n    return {'x': np.ones((10, 3), np.float32), 'y': np.arange(10) % 2}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_data("py:mydata:make")
    assert data.num_classes == 2
    rnd = load_data("random:3x8x8?n=10")
    assert rnd.input_shape == (3, 8, 8) and not rnd.labelled
    with pytest.raises(SourceError, match="unknown data source scheme 'nope'"):
        load_data("nope:x")
    with pytest.raises(SourceError, match="unknown builtin data 'digit'"):
        load_data("builtin:digit")
    sys.modules.pop("mydata", None)


def test_model_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    student = load_model("builtin:digits-student")
    assert sum(p.numel() for p in student.module.parameters()) == 3658
    assert student.input_shape == (1, 8, 8)
    tv = load_model("torchvision:resnet18?num_classes=10")
    assert tv.module.fc.out_features == 10
    tm = load_model("timm:resnet10t")
    assert tm.input_shape[0] == 3
    with pytest.raises(SourceError, match="did you mean resnet18"):
        load_model("torchvision:resnet181")
    with pytest.raises(SourceError, match="unknown builtin model"):
        load_model("builtin:nope")

    mod = tmp_path / "mymodels.py"
    mod.write_text("import torch\ndef build(width=4):\n    return torch.nn.Linear(3, width)\ndef bad():\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_model("py:mymodels:build?width=5").module.out_features == 5
    with pytest.raises(SourceError, match="expected a torch.nn.Module"):
        load_model("py:mymodels:bad")
    with pytest.raises(SourceError, match="has no attribute"):
        load_model("py:mymodels:missing")
    sys.modules.pop("mymodels", None)


def test_checkpoint_files(tmp_path: Path) -> None:
    model = DemoStudent()
    ckpt = tmp_path / "student.pt"
    save_checkpoint(model, "builtin:digits-student", ckpt)
    loaded = load_model(str(ckpt))
    for a, b in zip(model.state_dict().values(), loaded.module.state_dict().values()):
        assert torch.equal(a, b)

    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(SourceError, match="needs the architecture"):
        load_model(str(plain))
    assert load_model(str(plain), arch="builtin:digits-student").module is not None
    with pytest.raises(SourceError, match="do not fit architecture"):
        load_model(str(plain), arch="builtin:mnist-student")

    pickled = tmp_path / "module.pt"
    torch.save(model, pickled)  # a whole pickled module: would run code on load
    with pytest.raises(SourceError, match="pickled edgekd.models.DemoStudent object"):
        load_model(str(pickled))

    program = torch.export.export(model.eval(), (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    pt2 = tmp_path / "student.pt2"
    torch.export.save(program, pt2)
    loaded = load_model(str(pt2))
    assert loaded.input_shape == (1, 8, 8)
    loaded.module.train()  # every pass and the exporter switch modes: torch's stubs for these raise
    out = loaded.module.eval()(torch.zeros(5, 1, 8, 8) + 0.5)
    assert out.shape == (5, 10)
    with pytest.raises(SourceError, match="model file not found"):
        load_model(str(tmp_path / "missing.pt"))


def test_builtin_teacher_is_trained_and_cached(digits, digits_teacher) -> None:
    from edgekd.export import torch_outputs

    acc = (torch_outputs(digits_teacher, digits.x_test).argmax(1) == digits.y_test).mean()
    assert acc > 0.95
    again = load_model("builtin:digits-teacher").module  # served from the cache: identical weights
    for a, b in zip(digits_teacher.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_model_file_kinds_get_clear_errors(tmp_path: Path) -> None:
    model = DemoStudent().eval()
    with pytest.raises(SourceError, match="is a folder, not a model file"):
        load_model(str(tmp_path))
    scripted = tmp_path / "scripted.pt"
    with pytest.warns(FutureWarning):
        torch.jit.save(torch.jit.script(model), scripted)
    with pytest.raises(SourceError, match="TorchScript archive"):
        load_model(str(scripted))
    garbage = tmp_path / "lfs.pt"
    garbage.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\n")
    with pytest.raises(SourceError, match="not a PyTorch file"):
        load_model(str(garbage))
    static = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 8, 8),)), static)
    with pytest.raises(SourceError, match="fixed batch size 1"):
        load_model(str(static))
    as_pt = tmp_path / "program.pt"  # a torch.export archive under the wrong suffix is still recognized
    as_pt.write_bytes(static.read_bytes())
    with pytest.raises(SourceError, match="fixed batch size 1"):
        load_model(str(as_pt))


def test_training_checkpoints_are_unwrapped(tmp_path: Path) -> None:
    model = DemoStudent()
    nested = tmp_path / "lightning.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, nested)
    loaded = load_model(str(nested), arch="builtin:digits-student")
    for a, b in zip(model.state_dict().values(), loaded.module.state_dict().values()):
        assert torch.equal(a, b)
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "weights_here": 1}, other)
    with pytest.raises(SourceError, match="no state_dict found.*epoch, weights_here"):
        load_model(str(other), arch="builtin:digits-student")
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    with pytest.raises(SourceError, match=r"size mismatch for classifier\.1\.weight"):
        load_model(str(plain), arch="builtin:mnist-student")


def test_factory_errors_are_source_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "badfactories.py").write_text(
        "import torch\ndef boom():\n    raise RuntimeError('no weights here')\n"
        "def needs(width):\n    return torch.nn.Linear(3, width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SourceError, match=r"raised RuntimeError: no weights here \(at .*badfactories.py:3\)"):
        load_model("py:badfactories:boom")
    with pytest.raises(SourceError, match="missing 1 required positional argument: 'width'"):
        load_model("py:badfactories:needs")
    with pytest.raises(SourceError, match="with foo=1 raised TypeError"):
        load_model("torchvision:resnet18?foo=1")
    with pytest.raises(SourceError, match="did you mean resnet18"):
        load_model("timm:resnet81")
    sys.modules.pop("badfactories", None)


def test_bad_data_parameters_and_tiny_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 1, 4, 4), np.float32), y=np.arange(10) % 2)
    for bad in ("x", "1.5", "0"):
        with pytest.raises(SourceError, match=f"test_fraction='{bad}' must be a number between 0 and 1"):
            load_data(f"npz:{path}?test_fraction={bad}")
    assert len(load_data(f"npz:{path}?test_fraction=0.99").x_train) == 1  # both splits keep a sample
    np.savez(path, x=np.zeros((10, 1, 4, 4), np.complex64), y=np.arange(10) % 2)
    with pytest.raises(SourceError, match="non-numeric dtype complex64"):  # was cast to float, dropping .imag
        load_data(f"npz:{path}")
    for bad in ("random:-1x8x8", "random:0x8x8", "random:3xx8"):
        with pytest.raises(SourceError, match="positive sizes"):
            load_data(bad)
    with pytest.raises(SourceError, match="n=1 samples: needs at least 2"):
        load_data("random:1x8x8?n=1")

    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(folder / "a" / "0.png")
    with pytest.raises(SourceError, match="found 1 image; needs at least 2"):
        load_data(f"imagefolder:{folder}")
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(folder / "a" / "1.png")
    with pytest.raises(SourceError, match="size='abc' must be HxW"):
        load_data(f"imagefolder:{folder}?size=abc")

    (tmp_path / "baddata.py").write_text(
        "import numpy as np\ndef boom():\n    raise ValueError('no data here')\n"
        "def half():\n    return {'x_train': np.zeros((4, 2))}\n"
        "def lists():\n    return {'x': np.zeros((6, 2)), 'y': [0, 1] * 3}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SourceError, match=r"raised ValueError: no data here \(at .*baddata.py:3\)"):
        load_data("py:baddata:boom")
    with pytest.raises(SourceError, match="x_train but no x_test"):
        load_data("py:baddata:half")
    assert load_data("py:baddata:lists").num_classes == 2
    sys.modules.pop("baddata", None)


def test_layout_hint() -> None:
    from edgekd.data import layout_hint

    assert "channels-last" in layout_hint((8, 8, 1), (1, 8, 8))
    assert "reshape to (N, 1, 8, 8)" in layout_hint((64,), (1, 8, 8))
    assert layout_hint((3, 8, 8), (1, 8, 8)) is None


def test_models_must_fit_the_data() -> None:
    from edgekd.models import LoadedModel, check_fits_data

    x = np.zeros((4, 1, 8, 8), np.float32)
    ten = LoadedModel(DemoStudent(1, 10, 8).eval(), "ten", "t")
    five = LoadedModel(DemoStudent(1, 5, 8).eval(), "five", "f")
    check_fits_data(ten, ten, x, 10, "d")
    with pytest.raises(SourceError, match="model five has 5 outputs but the data's labels have 10 classes"):
        check_fits_data(five, None, x, 10, "d")
    with pytest.raises(SourceError, match="teacher ten has 10"):
        check_fits_data(five, ten, x, None, "d")
    with pytest.raises(SourceError, match=r"cannot run on the data's samples of shape \[3, 8, 8\]"):
        check_fits_data(ten, None, np.zeros((2, 3, 8, 8), np.float32), None, "d")
    with pytest.raises(SourceError, match="--arch applies to a .pt state_dict file"):
        load_model("builtin:digits-student", arch="builtin:digits-student")


def test_source_parameters_are_checked_and_plain_npz_paths_work(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 1, 4, 4), np.float32), y=np.arange(10) % 2)
    assert load_data(str(path)).input_shape == (1, 4, 4)  # no npz: prefix needed
    with pytest.raises(SourceError, match="did you mean 'test_fraction'"):
        load_data(f"npz:{path}?test_frac=0.1")
    with pytest.raises(SourceError, match="unknown parameter 'seed' for a builtin: source"):
        load_data("builtin:digits?seed=1")
    with pytest.raises(SourceError, match=f"imagefolder:{tmp_path}"):
        load_data(str(tmp_path))
    with pytest.raises(SourceError, match="unknown parameter 'num_classes'"):
        load_model("builtin:digits-student?num_classes=5")  # was ignored: the model kept 10 classes


def test_imagefolder_ignores_hidden_folders_and_files(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("cat", "dog", ".ipynb_checkpoints", "__MACOSX"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((4, 4), 40 * i, np.uint8), mode="L").save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    data = load_data(f"imagefolder:{tmp_path}")
    assert data.labels == ("cat", "dog") and len(data.x_train) + len(data.x_test) == 4


def test_imagefolder_does_not_keep_files_open(tmp_path: Path) -> None:
    import subprocess

    from PIL import Image

    for i in range(120):
        (tmp_path / "ab"[i % 2]).mkdir(exist_ok=True)
        Image.fromarray(np.full((4, 4), i, np.uint8), mode="L").save(tmp_path / "ab"[i % 2] / f"{i}.png")
    code = ("import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit("
            "resource.RLIMIT_NOFILE)[1])); from edgekd.data import load_data; "
            f"print(len(load_data('imagefolder:{tmp_path}').x_train))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "96", done.stderr[-500:]


def test_imagefolder_keeps_16_bit_values(tmp_path: Path) -> None:
    from PIL import Image

    ramp = (np.arange(16).reshape(4, 4) * 4000).astype(np.uint16)  # values up to 60000
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.fromarray(ramp).save(tmp_path / cls / "0.png")
    data = load_data(f"imagefolder:{tmp_path}")
    values = np.unique(np.concatenate([data.x_train.ravel(), data.x_test.ravel()]))
    assert len(values) == 16 and values.max() == pytest.approx(60000 / 65535)  # was clipped: 0 and 255 only
    assert data.preprocessing["mode"] == "I;16"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a" / "1.png")
    with pytest.raises(SourceError, match="mixes 16-bit"):
        load_data(f"imagefolder:{tmp_path}")


def test_pretrained_sizes_are_defaults_not_requirements() -> None:
    from edgekd.models import check_fits_data

    mobile = load_model("torchvision:mobilenet_v3_small?num_classes=4")
    assert mobile.input_shape == (3, 224, 224) and not mobile.shape_required
    x = np.zeros((2, 3, 32, 32), np.float32)
    check_fits_data(mobile, None, x, 4, "random:3x32x32")  # a CNN with adaptive pooling takes 32 px
    fixed = load_model("torchvision:mobilenet_v3_small?input_size=96&num_classes=4")
    assert fixed.input_shape == (3, 96, 96) and fixed.shape_required
    assert load_model("torchvision:resnet18?input_size=3x64x48").input_shape == (3, 64, 48)
    with pytest.raises(SourceError, match="input_size='big' is not a size"):
        load_model("torchvision:resnet18?input_size=big")
    timm_model = load_model("timm:resnet10t?num_classes=3")
    assert not timm_model.shape_required
    check_fits_data(timm_model, None, np.zeros((2, 3, 224, 224), np.float32), 3, "random:3x224x224")
    vit = load_model("timm:vit_tiny_patch16_224?num_classes=2&img_size=32&depth=1")
    with pytest.raises(SourceError, match="resize the data to it"):  # a ViT really needs its size
        check_fits_data(vit, None, np.zeros((2, 3, 48, 48), np.float32), None, "random:3x48x48")


def test_compress_takes_the_datas_size_for_a_torchvision_cnn(tmp_path: Path) -> None:
    from edgekd.pipeline import CompressOptions, compress

    report = compress("torchvision:mobilenet_v3_small?num_classes=4", data="random:3x32x32?n=4", recipe="fp32",
                      targets=["cpu"], out=tmp_path / "out", options=CompressOptions(measure=False))
    assert report["data"]["input_shape"] == [3, 32, 32]
    assert report["targets"]["cpu"]["parity_ok"]


def test_wrapper_prefixes_and_lightning_checkpoints(tmp_path: Path) -> None:
    model = DemoStudent()
    for prefix in ("model.", "net.", "student.", "model.module.", "_orig_mod."):
        path = tmp_path / f"{prefix.replace('.', '_')}.pt"
        torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
        loaded = load_model(str(path), arch="builtin:digits-student")
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.module.state_dict().values()))
    # a real submodule name ("features." / "classifier.") is never stripped: these keys load as they are
    assert load_model(str(tmp_path / "model_.pt"), arch="builtin:digits-student").module is not None
    ckpt = tmp_path / "epoch=3-step=120.ckpt"
    torch.save({"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0", "hyper_parameters": {"lr": 0.1},
                "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}, ckpt)
    loaded = load_model(str(ckpt), arch="builtin:digits-student")
    assert torch.equal(loaded.module.state_dict()["features.0.weight"], model.state_dict()["features.0.weight"])


def test_prefix_that_is_a_real_submodule_is_put_back(tmp_path: Path) -> None:
    from torch import nn

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(3, 2)

    state = Wrapped().state_dict()  # every key starts with "model." because the submodule is called model
    path = tmp_path / "wrapped.pt"
    torch.save(state, path)
    sys.modules["wrapped_for_test"] = type(sys)("wrapped_for_test")
    sys.modules["wrapped_for_test"].build = Wrapped
    try:
        loaded = load_model(str(path), arch="py:wrapped_for_test:build")
    finally:
        del sys.modules["wrapped_for_test"]
    assert torch.equal(loaded.module.model.weight, state["model.weight"])


def test_a_py_file_loads_once_under_a_stable_name_and_its_classes_pickle(tmp_path: Path) -> None:
    import pickle

    from edgekd.sources import file_module_name, import_callable

    code = ("import torch\nclass Net(torch.nn.Linear):\n    pass\n"
            "def student():\n    return Net(2, 3)\ndef teacher():\n    return Net(2, 5)\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "nets.py").write_text(code)
    student = load_model(f"py:{tmp_path}/a/nets.py:student").module
    teacher = load_model(f"py:{tmp_path}/a/../a/nets.py:teacher").module  # the same file, spelled differently
    assert type(student) is type(teacher)  # executed once: one class, not two look-alikes
    name = type(student).__module__
    assert name == file_module_name(tmp_path / "a" / "nets.py") and sys.modules[name].student is not None
    assert type(pickle.loads(pickle.dumps(teacher))) is type(teacher)  # pickles by reference (torchrun workers)
    other = import_callable(f"{tmp_path}/b/nets.py:Net", where="test")
    assert other is not type(student) and other.__module__ != name  # one stem, two files: two modules
    (tmp_path / "a" / "nets.py").write_text(code + "EDITED = True\n# longer\n")
    assert import_callable(f"{tmp_path}/a/nets.py:EDITED", where="test") is True  # a changed file is executed again
