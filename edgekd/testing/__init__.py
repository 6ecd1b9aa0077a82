"""Helpers for edgekd's tests and benchmarks, not for the product: tiny seeded models and models quantized by
another tool (ONNX Runtime), so a backend or a reader is tested on files edgekd did not write.

Nothing under ``edgekd/`` outside this package imports it (a test checks); it imports torch and onnxruntime.
The demo models that ``builtin:`` sources ship (DemoTeacher, DemoStudent, ResidualCNN, TinyMLP) stay in
``edgekd.models``: they are user-facing.
"""

from edgekd.testing.models import AllOps, export_float, make_module, ort_qdq, ort_quantize, train_briefly

__all__ = ["AllOps", "export_float", "make_module", "ort_qdq", "ort_quantize", "train_briefly"]
