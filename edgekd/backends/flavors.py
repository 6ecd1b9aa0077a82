"""The Q/DQ flavors edgekd knows by name.

A flavor is a ``QDQFlavor`` object (``edgekd.backends.base``); the built-in ones are here so that a plugin
backend can reuse one (``qdq_flavor = TENSORRT``) or derive its own (``ORT.derive("ort-symmetric",
activations="int8")``). Callers that hold only a name (tests, an older plugin's ``onnx_flavor = "tensorrt"``)
resolve it with ``flavor_named``. The ``*_of`` functions read a backend's declarations with the defaults
of ``BackendBase``, so a plugin that does not subclass it still works. Torch-free.
"""

from __future__ import annotations

from typing import Any

from edgekd.backends.base import QDQFlavor
from edgekd.errors import ExportError

ORT = QDQFlavor("ort", "ONNX Runtime", "uint8", rewrites=("quantize_before_relu",))
OPENVINO = QDQFlavor("openvino", "OpenVINO", "uint8")
TENSORRT = QDQFlavor("tensorrt", "TensorRT", "int8", zero_point_zero=True, rewrites=("drop_output_qdq",),
                     hint="quantize with a tensorrt target in --target (or symmetric_activations = true)")
HLS = QDQFlavor("hls", "HLS", "native", zero_point_zero=True, power_of_two_scales=True,
                hint="quantize with an hls target that asks for power-of-two scales "
                     "(or power_of_two = true and symmetric_activations = true in the quantize pass)")

#: ONNX Runtime's flavor: the one ``model.onnx`` is written in and the one every parity reference runs
REFERENCE_FLAVOR = ORT
KNOWN_FLAVORS: dict[str, QDQFlavor] = {f.name: f for f in (ORT, OPENVINO, TENSORRT, HLS)}


def flavor_named(name: str | QDQFlavor, where: str | None = None) -> QDQFlavor:
    """The flavor object for ``name`` (a QDQFlavor passes through)."""
    if isinstance(name, QDQFlavor):
        return name
    try:
        return KNOWN_FLAVORS[name]
    except KeyError:
        raise ExportError(f"unknown ONNX flavor {name!r}; known: {', '.join(KNOWN_FLAVORS)}", where=where,
                          hint="a plugin backend declares its own: qdq_flavor = ORT.derive(\"my-flavor\", ...) "
                               "(edgekd.backends.flavors; see docs/plugins.md)") from None


def flavor_of(backend: Any) -> QDQFlavor:
    """The Q/DQ flavor ``backend`` wants: its ``qdq_flavor`` object, or (older plugins) a known ``onnx_flavor`` name."""
    flavor = getattr(backend, "qdq_flavor", None)
    if isinstance(flavor, QDQFlavor):
        return flavor
    name = getattr(backend, "onnx_flavor", None)
    return REFERENCE_FLAVOR if name is None else flavor_named(name, where=f"backend {getattr(backend, 'name', '?')}")
