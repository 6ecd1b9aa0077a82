"""The compression recipe was called a "profile": every old spelling still works, with a one-line note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd import deprecation
from edgekd.cli import build_parser, main
from edgekd.config import Profile, Recipe, available, load_profile, load_recipe


@pytest.fixture(autouse=True)
def _fresh_notes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deprecation, "_SAID", set())


def test_profile_flag_is_the_recipe_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    new = parser.parse_args(["compress", "--model", "m", "--data", "d", "--recipe", "int8-kd", "--out", "o"])
    assert capsys.readouterr().err == ""
    old = parser.parse_args(["compress", "--model", "m", "--data", "d", "--profile", "int8-kd", "--out", "o"])
    assert old.recipe == new.recipe == "int8-kd"
    assert capsys.readouterr().err == ("edgekd: note: --profile is deprecated; use --recipe (the compression recipe; "
                                       "`edgekd profile` measures latency)\n")
    assert parser.parse_args(["demo", "--profile", "kd"]).recipe == "kd"
    assert parser.parse_args(["compress", "--model", "m", "--data", "d", "--out", "o"]).recipe == "fp32"


def test_help_shows_only_the_new_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    text = capsys.readouterr().out
    assert "--recipe" in text and "--profile" not in text
    with pytest.raises(SystemExit):
        main(["list", "--help"])
    assert "{recipes,targets,passes,backends}" in capsys.readouterr().out


def test_list_profiles_lists_the_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "recipes", "--json"]) == 0
    recipes = json.loads(capsys.readouterr().out)
    assert main(["list", "profiles", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == recipes and {r["name"] for r in recipes} >= {"fp32", "int8-kd"}
    assert "`edgekd list profiles` is deprecated; use `edgekd list recipes`" in err


def test_old_env_var_and_python_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.toml").write_text('description = "from the old path variable"\n')
    monkeypatch.setenv("EDGEKD_PROFILES_PATH", str(tmp_path))
    assert available("recipes")["mine"] == tmp_path / "mine.toml"
    assert "EDGEKD_PROFILES_PATH is deprecated; use EDGEKD_RECIPES_PATH" in capsys.readouterr().err
    assert Profile is Recipe
    with pytest.warns(DeprecationWarning, match="use load_recipe"):
        assert load_profile("fp32") == load_recipe("fp32")


def test_old_profile_key_in_a_build_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgekd.buildfile import load_buildfile

    path = tmp_path / "edgekd.toml"
    path.write_text('model = "builtin:digits-student"\ndata = "builtin:digits"\nout = "b"\nprofile = "kd"\n')
    assert load_buildfile(path).recipe == "kd"
    assert "'profile' in edgekd.toml is deprecated; use recipe = \"...\"" in capsys.readouterr().err
