"""Shared fixtures. Tests are hermetic: the model cache lives in a per-session temp folder, except the trained
builtin teachers, which persist in the checkout's .edgekd-cache/teachers (git-ignored; CI may cache it): their file
names are keyed on the recipe and on the code that trains them (edgekd/train/teachers.py), so they are never stale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TEACHER_CACHE = Path(__file__).resolve().parents[1] / ".edgekd-cache" / "teachers"


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("EDGEKD_CACHE_DIR", str(tmp_path_factory.mktemp("edgekd-cache")))
    os.environ.setdefault("EDGEKD_TEACHER_CACHE_DIR", str(TEACHER_CACHE))  # inherited by CLI subprocesses too
    os.environ["EDGEKD_QUIET"] = "1"


@pytest.fixture(scope="session")
def digits():
    from edgekd.data import load_data

    return load_data("builtin:digits")


@pytest.fixture(scope="session")
def digits_teacher():
    from edgekd.models import load_model

    return load_model("builtin:digits-teacher").module


@pytest.fixture()
def blocked_dq_matmul():
    """Opset-21 MatMul whose int4-range weight has one scale per 4 rows (DequantizeLinear block_size=4):
    the INT4 weight-only layout other tools write. Returns (model, int weights, scales)."""
    import numpy as np
    from onnx import TensorProto, checker, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-8, 8, (16, 8)).astype(np.int8)
    scale = (rng.random((4, 8)) * 0.1 + 0.01).astype(np.float32)
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"], axis=0, block_size=4, name="dq_block"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
                              [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(scale, "w_s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    checker.check_model(model)
    return model, w, scale
