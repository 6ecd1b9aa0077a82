"""An out-of-tree edgekd backend: ONNX Runtime under another name, with symmetric int8 activations.

It shows the three things a backend declares so that edgekd can quantize for it without knowing its name:

* ``numerics(target)``: what the quantize pass must produce (here: signed int8 activations, zero point 0);
* ``qdq_flavor``: how the exported Q/DQ ONNX stores them (derived from the built-in ONNX Runtime flavor:
  int8 zero points instead of uint8 ones, the same graph rewrites);
* the rest (``build``/``load``/``layer_table``) is ONNX Runtime's, inherited.

Installed, it registers through the ``edgekd.backends`` entry point (see pyproject.toml) and its target
file ships inside the package: ``edgekd compress ... --target <site-packages>/edgekd_ort_symmetric/targets/ort-symmetric.toml``
(or put that folder on ``EDGEKD_TARGETS_PATH`` and say ``--target ort-symmetric``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.backends.base import Numerics
from edgekd.backends.flavors import ORT
from edgekd.backends.onnxruntime import OnnxRuntimeBackend

TARGETS = Path(__file__).resolve().parent / "targets"

#: ONNX Runtime's flavor, but every activation stored as signed int8 with zero point 0
ORT_SYMMETRIC = ORT.derive("ort-symmetric", runtime="ort-symmetric", activations="int8", zero_point_zero=True,
                           hint="quantize with an ort-symmetric target in --target (or symmetric_activations = true)")


class OrtSymmetricBackend(OnnxRuntimeBackend):
    name = "ort-symmetric"
    qdq_flavor = ORT_SYMMETRIC

    def numerics(self, target: Any) -> Numerics:
        return Numerics(symmetric_activations=True, weight_bits=(8,))
