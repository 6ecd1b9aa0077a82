"""edgekd search: the teacher-derived space, the path, the gates and the files it writes (tiny seeded models)."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch
from torch import nn

from edgekd.budgets import parse_search_budget
from edgekd.config import load_recipe
from edgekd.errors import ConfigError, EdgekdError
from edgekd.models import DemoTeacher, ResidualCNN
from edgekd.passes.prune import count_macs_params
from edgekd.search.outputs import pareto_front
from edgekd.search.space import Candidate, SearchSpace


def _teacher() -> nn.Module:
    torch.manual_seed(0)
    return DemoTeacher(1, 10, width=8).eval()


def test_space_from_teacher_groups_blocks_and_floor() -> None:
    model, x = _teacher(), torch.randn(1, 1, 8, 8)
    space = SearchSpace.from_teacher(model, x, granule=4)
    names = {g.name: g.channels for g in space.groups}
    assert names == {"features.0": 8, "features.3": 16, "features.7": 32, "features.10": 32, "classifier.1": 256}
    assert [b.name for b in space.blocks] == ["features.10"]  # the 32->32 stride-1 conv (+ its BN)
    floor = space.materialize(model, space.smallest())
    assert count_macs_params(floor, x)[0] < count_macs_params(model, x)[0] / 5
    assert floor(x).shape == (1, 10)  # the output layer is never thinned
    thin = space.materialize(model, Candidate().with_width("features.3", 4))
    assert thin.features[3].out_channels == 4 and thin.features[7].in_channels == 4
    assert model.features[3].out_channels == 16  # the teacher is untouched


def test_residual_blocks_are_removable_and_widths_keep_the_strongest_channels() -> None:
    torch.manual_seed(0)
    model, x = ResidualCNN(1, 10, width=8).eval(), torch.randn(2, 1, 8, 8)
    space = SearchSpace.from_teacher(model, x, granule=2)
    group = next(g for g in space.groups if "body.0" in g.members)
    keep = sorted(range(group.channels), key=lambda i: -group.importance[i])[:2]
    thin = space.materialize(model, Candidate().with_width(group.name, 2))
    full_w = model.body[0].weight.detach()
    assert torch.allclose(thin.body[0].weight, full_w[sorted(keep)])  # inherited, largest L2 importance kept


def test_candidate_and_search_file_refusals(tmp_path) -> None:
    space = SearchSpace.from_teacher(_teacher(), torch.randn(1, 1, 8, 8), granule=4)
    with pytest.raises(EdgekdError, match="not a channel group"):
        space.check(Candidate((("nope", 4),)), where="x")
    with pytest.raises(EdgekdError, match="cannot keep 99"):
        space.check(Candidate((("features.0", 99),)), where="x")
    with pytest.raises(EdgekdError, match="not removable"):
        space.check(Candidate((), ("features.0",)), where="x")
    with pytest.raises(EdgekdError, match="unknown key"):
        Candidate.from_dict({"widths": {}, "arch": "py:os:system"}, where="x")
    from edgekd.search.replay import read_search_file

    bad = tmp_path / "s.toml"
    bad.write_text('[search]\nmodel = "py:os:system"\n[search.student]\n')
    with pytest.raises(ConfigError, match="unknown key"):
        read_search_file(bad)


@pytest.mark.parametrize("text, match", [("p90=1", "KIND=VALUE"), ("macs=abc", "cannot read"), ("p90_ms=2k", "cannot"),
                                         ("params=0", "> 0"), ("size_mb", "KIND=VALUE")])
def test_budget_parser_refuses_with_the_kinds(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_search_budget(text)


def test_pareto_front_keeps_only_undominated_points() -> None:
    pts = [{"predicted_cost": c, "proxy": p} for c, p in ((10, 90), (5, 80), (6, 70), (2, 50), (3, 40))]
    assert sorted(pareto_front(pts)) == [0, 1, 3]


def _options(budget: str, **kw):
    from edgekd.search.run import SearchOptions

    recipe = load_recipe("int8-kd", ["distill.epochs=1", "quantize.finetune.epochs=1", "quantize.calibration_samples=64"])
    return SearchOptions(budgets=(parse_search_budget(budget),), recipe=recipe, top_k=2, short_epochs=0,
                         step_fraction=0.35, proxy_samples=128, **kw)


def test_search_macs_budget_end_to_end_and_replay(tmp_path) -> None:
    from edgekd.search.replay import replay
    from edgekd.search.run import search

    teacher = "builtin:digits-teacher"
    macs_teacher = count_macs_params(DemoTeacher(1, 10), torch.randn(1, 1, 8, 8))[0]
    limit = int(macs_teacher * 0.4)
    report = search(teacher, data="builtin:digits", target="cpu", options=_options(f"macs={limit}", final=False),
                    out=tmp_path / "s")
    entry = report["budgets"][0]
    assert entry["status"] == "ranked", entry
    by = {json.dumps(p["candidate"], sort_keys=True): p for p in report["points"]}
    winner = by[json.dumps(entry["winner"], sort_keys=True)]
    assert winner["macs"] <= limit < report["points"][0]["macs"]
    assert not (tmp_path / "s" / "bundle").exists()  # --no-final: ranked, nothing trained
    pareto = json.loads((tmp_path / "s" / "pareto.json").read_text())
    assert len(pareto["points"]) == len(report["points"]) > 3 and pareto["front"]
    assert (tmp_path / "s" / "pareto.png").stat().st_size > 10_000
    table = tomllib.loads((tmp_path / "s" / "search.toml").read_text())["search"]
    assert table["student"]["widths"] == entry["winner"]["widths"]
    again = replay(tmp_path / "s" / "search.toml", teacher=teacher, data="builtin:digits", target=None,
                   out=tmp_path / "r", recipe=load_recipe("fp32"))  # the same student, untrained: fast
    assert again["status"] == "passed" and again["candidate"] == entry["winner"]
    assert (tmp_path / "r" / "manifest.json").exists()


def test_infeasible_budget_is_refused_before_training(tmp_path) -> None:
    from edgekd.search.run import search

    with pytest.raises(EdgekdError, match="infeasible.*nothing was trained|floor"):
        search("builtin:digits-teacher", data="builtin:digits", target="cpu", options=_options("macs=10"),
               out=tmp_path / "s")
    assert not (tmp_path / "s" / "bundle").exists()


def test_latency_budget_on_an_estimating_fpga_target_is_refused(tmp_path) -> None:
    from edgekd.search.run import search

    with pytest.raises(EdgekdError, match="estimated latency"):
        search("builtin:digits-teacher", data="builtin:digits", target="fpga-zcu104", options=_options("p90_ms=1"),
               out=tmp_path / "s")


def test_measured_gate_uses_the_upper_ci_end() -> None:
    from edgekd.budgets import judge_measured_p90

    assert judge_measured_p90(0.99, 0.9, 1.0).ok
    verdict = judge_measured_p90(1.02, 0.97, 1.0)  # the sample p90 is under the line, its CI is not
    assert not verdict.ok and "95% CI" in verdict.reason


def test_latency_budget_end_to_end_on_ort(tmp_path) -> None:
    """A p90 budget: the table is calibrated on this teacher's students, finalists and the trained bundle are
    measured on the target, and the bundle carries the budget for `edgekd check`."""
    from edgekd.bundle import Bundle
    from edgekd.search.run import search

    report = search("builtin:digits-teacher", data="builtin:digits", target="cpu",
                    options=_options("p90_ms=2.0", calibration_models=3), out=tmp_path / "s")
    entry = report["budgets"][0]
    assert entry["status"] == "ok", entry
    measured = entry["final"]["measured"]
    assert entry["final"]["gate"]["ok"] and entry["final"]["gate"]["value"] <= 2.0
    assert measured["p90_ci_ms"]["high"] >= measured["p90_ms"] > 0
    assert report["latency_table"]["calibration"]["models"] == 3 and report["cost"]["measured"] >= 2
    assert any(p.get("measured") for p in report["points"])
    target = Bundle(tmp_path / "s" / "bundle").target("cpu").target
    assert target["budgets"]["p90_ms"] == 2.0


def test_latency_budget_below_the_measured_floor_is_infeasible(tmp_path) -> None:
    from edgekd.search.run import search

    with pytest.raises(EdgekdError, match="infeasible") as info:
        search("builtin:digits-teacher", data="builtin:digits", target="cpu",
               options=_options("p90_ms=0.0001", calibration_models=2), out=tmp_path / "s")
    assert "measured" in str(info.value) and not (tmp_path / "s" / "bundle").exists()


def test_float_faster_layers_are_excluded_from_int8() -> None:
    from edgekd.search.precision import float_faster_layers, layer_names, slower_than_fp32, with_float_layers

    model, x = _teacher(), torch.randn(1, 1, 8, 8)
    names = layer_names(model, x)
    assert names == ["features.0", "features.3", "features.7", "features.10", "classifier.1", "classifier.3"]

    class Table:  # entries as the latency table returns them: (block key, ms) per Conv/Linear call
        def __init__(self, ms):
            self.ms = ms

        def blocks(self, m, e):
            return [(None, v) for v in self.ms]

    int8 = Table([1.0, 1.0, 1.0, 1.0, 0.30, 0.10])
    fp32 = Table([2.0, 2.0, 2.0, 2.0, 0.20, 0.095])  # the thin fc layers run faster in float
    faster = float_faster_layers(model, x, int8, fp32)
    assert [lp.layer for lp in faster] == ["classifier.1"]  # 0.095 vs 0.10 is within the 10 % margin
    recipe = with_float_layers(load_recipe("int8-kd"), ["classifier.1"])
    quant = next(p for p in recipe.passes if p.name == "quantize")
    assert quant.config.exclude == ("classifier.1",)
    assert slower_than_fp32({"p90_ci_ms": [1.2, 1.3]}, {"p90_ci_ms": [0.9, 1.1]})
    assert not slower_than_fp32({"p90_ci_ms": [1.0, 1.3]}, {"p90_ci_ms": [0.9, 1.1]})


def test_fpga_search_from_a_teacher_that_does_not_fit_the_part(tmp_path) -> None:
    """builtin:digits-teacher needs ~33x the ZCU104's DSP slices. A design that does not fit used to cost infinity,
    so no step of the path saved anything and every budget came out "infeasible"; now it costs UNFIT x its
    over-use, the path shrinks toward the part first, and the winner's built design fits and meets the budget."""
    from edgekd.search.cost import UNFIT
    from edgekd.search.run import SearchOptions, search

    opts = _options("cycles=1500")
    opts = SearchOptions(**{**opts.__dict__, "final": False})
    report = search("builtin:digits-teacher", data="builtin:digits", target="fpga-zcu104", options=opts,
                    out=tmp_path / "s")
    teacher = report["points"][0]
    assert teacher["predicted_cost"] > 10 * UNFIT  # does not fit, by >10x
    path = [p["predicted_cost"] for p in report["points"] if p["on_path"]]
    assert path == sorted(path, reverse=True) and path[-1] <= 1500  # down the over-use, then under the budget
    entry = report["budgets"][0]
    assert entry["status"] == "ranked" and entry["winner"]
    assert (tmp_path / "s" / "pareto.png").is_file()
