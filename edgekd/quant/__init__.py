"""Quantization with brevitas: graph-mode quantization of torch models, calibration, bias correction,
sensitivity analysis, and the exact QDQ ONNX export per runtime flavor ("brevitas-qdq").

The ``quantize`` pass (edgekd/passes/quantize.py) strings these together; they are usable alone:

    model = quantize_model(float_model, QuantRecipe(weight_bits=4))
    calibrate(model, x_train)
    twin = build_twin(model, x_train[:1], flavor="ort")   # plain torch, exports QDQ
"""

from edgekd.quant.calibrate import calibrate, correct_bias
from edgekd.quant.qdq import FLAVORS, build_twin
from edgekd.quant.recipe import QuantRecipe, quant_layers, quantize_model

__all__ = ["FLAVORS", "QuantRecipe", "build_twin", "calibrate", "correct_bias", "quant_layers", "quantize_model"]
