from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgekd.config import load_recipe, load_target
from edgekd.errors import ConfigError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_profiles_and_targets_load() -> None:
    from edgekd.config import available

    profiles = available("recipes")
    targets = available("targets")
    assert "fp32" in profiles and "cpu" in targets
    for name in profiles:
        assert load_recipe(name).name == name
    for name in targets:
        t = load_target(name)
        assert t.name == name and t.backend


def test_cpu_target_values() -> None:
    t = load_target("cpu")
    assert t.backend == "onnxruntime"
    assert t.options.intra_op_threads == 2
    assert t.budgets.p90_ms == 50.0


def test_unknown_key_names_file_key_and_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", 'backend = "onnxruntime"\n[options]\nintra_op_thread = 4\n')
    with pytest.raises(ConfigError) as err:
        load_target(path)
    text = str(err.value)
    assert str(path) in text and "intra_op_thread" in text and "intra_op_threads" in text
    assert "allowed keys" in text


def test_wrong_type_names_key(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", 'backend = "onnxruntime"\n[budgets]\np90_ms = "fast"\n')
    with pytest.raises(ConfigError, match=r"budgets p90_ms.*expected a number"):
        load_target(path)


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", 'backend = "onnxruntime"\n[options]\nintra_op_threads = true\n')
    with pytest.raises(ConfigError, match="expected an integer"):
        load_target(path)


def test_literal_choices_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "t.toml", 'backend = "onnxruntime"\n[options]\ngraph_optimization_level = "max"\n')
    with pytest.raises(ConfigError, match=re.escape("'disable' | 'basic'")):
        load_target(path)


def test_missing_backend_and_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key 'backend'"):
        load_target(write(tmp_path, "a.toml", 'name = "x"\n'))
    with pytest.raises(ConfigError, match="did you mean onnxruntime"):
        load_target(write(tmp_path, "b.toml", 'backend = "onnxruntim"\n'))


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_target("does/not/exist.toml")
    with pytest.raises(ConfigError, match="unknown target 'cpuu'.*\n.*did you mean cpu"):
        load_target("cpuu")


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_recipe(write(tmp_path, "p.toml", "name = \n"))


def test_profile_unknown_pass_and_opset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"passes\[0\].*unknown pass 'distil'"):
        load_recipe(write(tmp_path, "p.toml", '[[passes]]\nname = "distil"\n'))
    with pytest.raises(ConfigError, match="opset 11 is too old"):
        load_recipe(write(tmp_path, "q.toml", "[export]\nopset = 11\n"))


def test_profile_name_defaults_to_file_stem(tmp_path: Path) -> None:
    prof = load_recipe(write(tmp_path, "mine.toml", 'description = "x"\n'))
    assert prof.name == "mine" and prof.passes == ()


@pytest.mark.parametrize(("text", "message"), [
    ("[budgets]\np90_ms = -1", "p90_ms must be > 0"),
    ("[budgets]\nmax_size_mb = 0", "max_size_mb must be > 0"),
    ("[parity]\natol = -1e-3", "atol must be >= 0"),
    ("[parity]\nmin_top1_agreement = 99", "for 99 % write 0.99"),
    ("[profiling]\niterations = 0", "iterations and batch_size must be >= 1"),
    ("[profiling]\nbatch_size = 0", "iterations and batch_size must be >= 1"),
    ("[profiling]\nwarmup = -5", "warmup must be >= 0"),
    ('name = "../escape"', "cannot be a folder name in the bundle"),
    ('name = "variants"', "cannot be a folder name in the bundle"),
])
def test_target_values_out_of_range(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "t.toml", f'backend = "onnxruntime"\n{text}\n')
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_target(path)


def test_profile_export_values_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parity_samples must be >= 1"):
        load_recipe(write(tmp_path, "p.toml", "[export]\nparity_samples = 0\n"))


def test_duplicate_targets(tmp_path: Path) -> None:
    from edgekd.config import unique_targets

    cpu = load_target("cpu")
    assert unique_targets([cpu, load_target("cpu"), load_target("openvino-cpu")]) == [cpu, load_target("openvino-cpu")]
    other = write(tmp_path, "cpu.toml", 'backend = "onnxruntime"\n[options]\nintra_op_threads = 1\n')
    with pytest.raises(ConfigError, match="two different targets are named 'cpu'"):
        unique_targets([cpu, load_target(other)])


def test_list_survives_a_broken_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.commands.list import collect

    write(tmp_path, "broken.toml", "[[passes]\n")
    monkeypatch.setenv("EDGEKD_TARGETS_PATH", str(tmp_path))
    rows = {r["name"]: r for r in collect("targets")}
    assert rows["broken"]["description"].startswith("UNREADABLE") and "cpu" in rows


def test_profile_and_target_files_swapped() -> None:
    from edgekd.config import available

    with pytest.raises(ConfigError, match="this is a target file"):
        load_recipe(available("targets")["cpu"])
    with pytest.raises(ConfigError, match="this is a recipe"):
        load_target(available("recipes")["int8-kd"])
