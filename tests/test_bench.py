"""The benchmark suite's own logic: ratio/median helpers on known numbers, child-process cost, the
Markdown round trip, goal verdicts, and the assembly of docs/BENCHMARKS.md from topic sections."""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import bench  # noqa: E402
import bench_peers  # noqa: E402
import benchlib as bl  # noqa: E402
import peers_report  # noqa: E402


def test_doctests() -> None:
    for module in (bl, bench, peers_report):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() -> None:
    # round 3 is disturbed for both variants alike: per-round ratios see 2, 2, 2
    eager, fast = [20.0, 22.0, 80.0], [10.0, 11.0, 40.0]
    r = bl.ratio_stats(eager, fast)
    assert (r.median, r.low, r.high) == (2.0, 2.0, 2.0)
    assert str(r) == "2.00x [2.00-2.00]"
    assert bl.ratio_stats([3.0, 9.0], [1.0, 1.0]).median == 6.0
    with pytest.raises(ValueError, match="equally long"):
        bl.ratio_stats([1.0], [1.0, 2.0])
    assert bl.median([5.0, 1.0, 3.0]) == 3.0
    assert bl.mean_std([1.0, 3.0]) == "2.00 ± 1.41"


def test_interleaved_rotates_and_times_every_runner_each_round() -> None:
    order: list[str] = []
    runners = {k: (lambda k=k: order.append(k)) for k in "abc"}
    samples: dict[str, list[float]] = {}
    out = bl.interleaved(runners, rounds=3, calls=2, warmup=0, samples=samples)
    assert {k: len(v) for k, v in out.items()} == {"a": 3, "b": 3, "c": 3}
    assert {k: len(v) for k, v in samples.items()} == {"a": 6, "b": 6, "c": 6}
    firsts = [order[i * 6] for i in range(3)]
    assert firsts == ["a", "b", "c"]  # the starting runner rotates


def test_run_measured_reads_the_childs_own_peak_rss() -> None:
    small = bl.run_measured([sys.executable, "-c", "pass"])
    big = bl.run_measured([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert small.returncode == big.returncode == 0
    assert big.peak_rss_mb - small.peak_rss_mb > 250
    failing = bl.run_measured([sys.executable, "-c", "import sys; print('oops', file=sys.stderr); sys.exit(3)"])
    assert failing.returncode == 3 and "oops" in failing.stderr
    # a big parent must not leak into the child's figure (wait4's ru_maxrss would report the parent's 400 MB)
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    assert bl.run_measured([sys.executable, "-c", "import time; time.sleep(0.2)"]).peak_rss_mb < 100
    del ballast
    slow = bl.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow.returncode == 124 and slow.wall_s < 10


def test_markdown_table_round_trip() -> None:
    lines = bl.md_table(["variant", "p50 ms"], [["ORT | FP32".replace("|", "/"), "13.1"], ["edgekd", "1.7"]])
    tables = bl.parse_md_tables("intro\n\n" + "\n".join(lines) + "\n\ntext")
    assert tables[0].header == ["variant", "p50 ms"]
    assert tables[0].column("p50 ms") == ["13.1", "1.7"]
    with pytest.raises(ValueError, match="cells"):
        bl.md_table(["a", "b"], [["only one"]])
    assert bl.number("**2.65x** [2.64-2.66]") == 2.65
    with pytest.raises(ValueError):
        bl.number("n/a")


def test_goal_verdicts() -> None:
    assert bl.Goal("speed", 25.0, 25.0, unit="x").met is True
    assert bl.Goal("speed", 24.9, 25.0).met is False
    assert bl.Goal("drop", 1.2, 1.0, kind="max").met is False
    assert bl.Goal("drop", -0.3, 1.0, kind="max").met is True
    assert bl.Goal("x", None, 1.0).verdict() == "not measured"
    assert bl.Goal("speed", 30.0, 25.0, unit="x").row()[1:4] == ["30.00x", ">= 25x", "**met**"]


def _lat_row(key: str, group: str, rounds: list[float]) -> dict:
    return {"key": key, "label": key, "group": group, "size_mb": 1.0, "note": "", "p50_rounds": rounds, "p90_ms": 1.0}


def _fake_peers() -> dict:
    rows = [_lat_row("eager", "baseline", [30.0, 26.0, 28.0]), _lat_row("ort_fp32", "peer", [14.0, 13.0, 13.0]),
            _lat_row("nncf_ov", "peer", [1.8, 1.7, 1.9]),
            _lat_row("edgekd_int8_openvino-cpu", "edgekd", [2.0, 1.9, 2.0]),  # slower than NNCF: missed
            _lat_row("edgekd_channels50-int8_openvino-cpu", "edgekd", [1.0, 1.0, 1.0])]  # 26-30x eager: met
    lat = {"command": "x", "when": "now", "seconds": 60, "batches": [8], "tp_rounds": 1, "tp_calls": 1,
           "models": {"resnet18": {"model": "resnet18", "source": "torchvision:resnet18", "shape": [3, 224, 224],
                                   "rounds": 3, "calls": 5, "notes": [], "compress": [], "rows": rows,
                                   "throughput": {r["key"]: {"8": 100.0} for r in rows}}}}

    def run(prof: str, seed: int, acc: float) -> dict:
        return {"profile": prof, "seed": seed, "label": prof, "wall_s": 30.0, "peak_rss_mb": 1000.0,
                "pass_seconds": {"distill": 20.0}, "fp32_stage": 97.0, "accuracy": {"teacher": 98.0},
                "targets": {t: {"status": "ok", "accuracy": acc} for t in ("cpu", "openvino-cpu")}}

    accs = {"ce": 96.5, "kd": 97.2, "int8-ptq": 97.1, "int8-kd": 97.3, "w4a8-kd": 95.9, "sparse24-int8-kd": 97.0,
            "channels50-int8-kd": 96.8}
    runs = {p: [run(p, s, a + 0.1 * s) for s in range(2)] for p, a in accs.items()}
    acc = {"command": "y", "when": "now", "seconds": 60, "datasets": {"mnist5k": {
        "dataset": "mnist5k", "seeds": 2, "teacher": "t", "teacher_load_s": 0.1, "n_train": 4000, "n_test": 1000,
        "epochs": None, "runs": runs, "peers": {"NNCF -> OpenVINO (f32 hint)": [97.1, 97.2]}}}}
    return {"latency": lat, "accuracy": acc, "environment": bl.environment()}


def test_peers_goals_are_computed_from_the_numbers() -> None:
    goals = {g.name: g for g in peers_report.goals(_fake_peers())}
    fastest = goals["resnet18: fastest edgekd variant vs PyTorch eager FP32"]
    assert fastest.value == pytest.approx(28.0) and fastest.met
    ov = goals["resnet18: edgekd INT8 on OpenVINO vs NNCF -> OpenVINO INT8"]
    assert ov.value == pytest.approx(0.9) and ov.met is False
    w4 = goals["MNIST-5k: w4a8-kd drop vs the FP32 KD student (points, ORT)"]
    assert w4.value == pytest.approx(1.3) and w4.met is False
    assert goals["MNIST-5k: int8-kd drop vs the FP32 KD student (points, ORT)"].met is True
    assert goals["MNIST-5k: edgekd int8-kd minus NNCF PTQ of the KD student (points)"].value == pytest.approx(0.2)
    assert goals["pipeline cost: largest peak RSS (GiB)"].met is True
    slow_eager = _fake_peers()
    slow_eager["latency"]["models"]["resnet18"]["rows"][0]["p50_rounds"] = [20.0, 20.0, 20.0]
    missed = peers_report.latency_goals(slow_eager["latency"])[0]
    assert missed.met is False and "25x needs <= 0.80 ms" in missed.detail


def test_assemble_includes_sections_verbatim_and_computed_verdicts(tmp_path: Path) -> None:
    bench_dir = tmp_path / "bench"
    bench_dir.mkdir()
    profiler = ("# Profiler harness overhead\n\nProduced by `bench_profiler.py --rounds 7`\n\n| quantity | value |\n"
                "|---|---:|\n| overhead per query (median of per-round differences) | 0.73 µs (+5.7 %) |\n\n"
                "Aim: overhead <= max(3 % of a bare call, 20 µs) = 20.00 µs -> **meets** the aim.\n")
    (bench_dir / "profiler.md").write_text(profiler)
    (bench_dir / "hls.md").write_text("## HLS\n\nCommand: `bench_hls.py --quick`\n\n| model | requant | "
                                      "identical elements | max LSB | top-1 identical |\n|---|---|---:|---:|---:|\n"
                                      "| a | fixed_point | 4390/5000 | 1 | 495/500 |\n| b | float32 | 5000/5000 | 0 | "
                                      "500/500 |\n")
    (bench_dir / "hil.md").write_text("## HIL\n\nno table here\n")
    peers = _fake_peers()
    peers["goals"] = [g.row() for g in peers_report.goals(peers)]
    (bench_dir / "peers.json").write_text(json.dumps(peers))
    (bench_dir / "peers.md").write_text(peers_report.render(peers))
    out = tmp_path / "BENCHMARKS.md"
    (bench_dir / "suite.json").write_text(json.dumps({"hls": {
        "topic": "hls", "command": "hls-cmd", "wall_s": 6.0, "peak_rss_mb": 50.0, "status": "ok", "quick": False,
        "when": "yesterday", "stderr_tail": []}}))
    runs = [{"topic": "profiler", "command": "prof-cmd", "wall_s": 30.0, "peak_rss_mb": 100.0, "status": "ok",
             "quick": True, "when": "now", "stderr_tail": []}]
    text = bench.assemble(bench_dir, out, command="tools/bench.py --only profiler", runs=runs)
    assert out.read_text() == text
    assert profiler.rstrip() in text  # verbatim
    assert "`tools/bench.py --only profiler`" in text
    assert "| resnet18: edgekd INT8 on OpenVINO vs NNCF -> OpenVINO INT8 | 0.90x | >= 1x | **MISSED** |" in text
    assert "| profiler | profiler harness overhead per query | 0.73 µs (+5.7 %) | aim <= 20.00 µs: meets |" in text
    assert "99.0 % top-1 identical (worst case)" in text  # 495/500 is the worst case
    assert "| hil | app build cache hit vs miss | could not read |" in text  # said, not guessed
    assert "| distill | KD minus CE student (top-1 points) | section missing |" in text
    # hls: its own command line says --quick; profiler: run with the suite's quick settings (suite.json)
    assert "Smoke-run sections: profiler, hls." in text
    assert "| [profiler](#profiler) | this run | ok | 0.5 | 100 | `prof-cmd` |" in text
    assert "| [hls](#hls) | earlier (yesterday) | ok | 0.1 | 50 | `hls-cmd` |" in text
    assert "| distill (no section file) | not by tools/bench.py |" in text
    assert set(json.loads((bench_dir / "suite.json").read_text())) == {"hls", "profiler"}


def test_only_rejects_unknown_topics(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--only", "peers,quantization", "--assemble-only"])
    assert "unknown topic(s) quantization" in capsys.readouterr().err


def test_accuracy_profile_derivation(tmp_path: Path) -> None:
    import tomllib

    assert bench_peers.accuracy_profile("int8-kd", tmp_path, None) == "int8-kd"  # shipped, untouched
    ce = tomllib.loads(Path(bench_peers.accuracy_profile("ce", tmp_path, None)).read_text())
    kd = tomllib.loads((bench_peers.ROOT / "recipes" / "kd.toml").read_text())
    assert ce["passes"][0]["loss"] == "ce" and {**ce["passes"][0], "loss": "hinton"} == kd["passes"][0]
    quick = tomllib.loads(Path(bench_peers.accuracy_profile("sparse24-int8-kd", tmp_path, 1)).read_text())
    assert [p.get("epochs", p.get("finetune", {}).get("epochs")) for p in quick["passes"]] == [1, 1, 1]
    from edgekd.config import load_recipe

    load_recipe(bench_peers.latency_profile("channels50-int8", "graph", tmp_path))  # validates as a real profile


def test_environment_is_the_recorded_one_and_mixed_machines_are_flagged() -> None:
    def env(model: str, flags: list[str]) -> dict:
        return {"cpu": {"model": model, "logical_cpus": 2, "physical_cores": 2, "affinity_cpus": 2, "flags": flags},
                "os": {"system": "Linux", "release": "6", "machine": "x86_64"}, "python": "3.11.7",
                "versions": {"torch": "2.14.1"}, "env_vars": {}}

    xeon, epyc = env("Xeon", ["avx512_vnni", "amx_int8"]), env("EPYC", ["avx512_vnni"])
    record = {"peers": {"when": "2026-11-23 19:42 UTC", "environment": xeon},
              "hls": {"when": "2026-11-29 06:00 UTC", "environment": epyc}}
    lines = bench.environment_section(record, {"peers": "", "hls": ""})
    assert lines[0].startswith("- CPU: EPYC")  # the latest run's machine, not the assembling one
    assert "Xeon (AMX, 2 logical CPUs): peers; EPYC (AVX-512 VNNI, 2 logical CPUs): hls" in lines[-1]
    one = bench.environment_section({"peers": record["peers"]}, {"peers": ""})
    assert one[0].startswith("- CPU: Xeon") and not any("not all measured" in line for line in one)


def test_archived_runs_are_listed_with_their_machine(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "2026-01-01-xeon.md").write_text(
        "# edgekd benchmarks\n\nGenerated by `tools/bench.py` on 2026-01-01 10:00 UTC; benchmarks ran 30 min.\n\n"
        "- CPU: Xeon X; 2 logical CPUs\n\n9 of 12 goals met; missed: a.\n")
    lines = bench.archived_runs(tmp_path, tmp_path.parent)
    assert f"| [2026-01-01-xeon]({tmp_path.name}/archive/2026-01-01-xeon.md) | Xeon X | 2026-01-01 10:00 UTC | " \
           "9 of 12 goals met |" in lines
    assert bench.archived_runs(tmp_path / "none", tmp_path) == []
