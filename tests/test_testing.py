"""edgekd.testing: test/bench helpers stay out of the product, and the HLS backend imports no torch without them."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from edgekd.testing import make_module, train_briefly
from edgekd.train import evaluate

PACKAGE = Path(__file__).resolve().parents[1] / "edgekd"


def test_no_product_module_imports_the_testing_package() -> None:
    importers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "testing"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "edgekd.testing" or n.startswith("edgekd.testing.") for n in names):
                importers.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not importers


def test_hls_backend_imports_no_torch() -> None:
    code = "import sys, edgekd.backends.hls; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_train_briefly_trains_deterministically_through_fine_tune(digits) -> None:
    # all 1297 digits training samples (the validation split put back), as this test was sized for
    digits = dataclasses.replace(digits, x_train=np.concatenate([digits.x_train, digits.x_val]),
                                 y_train=np.concatenate([digits.y_train, digits.y_val]), x_val=None, y_val=None)
    first = train_briefly(make_module("student"), digits.x_train, digits.y_train, epochs=3)
    again = train_briefly(make_module("student"), digits.x_train, digits.y_train, epochs=3)
    assert not first.training and evaluate(first, digits.x_test, digits.y_test) > 65  # 74 % after 3 epochs
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
