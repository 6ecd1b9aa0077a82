"""edgekd.task_models: every built-in task pair runs on its dataset's samples with the task's output shapes,
exports to ONNX with the same outputs, and the teacher costs 4-10x the student's MACs."""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
import torch

from edgekd import metrics, task_data
from edgekd.errors import SourceError
from edgekd.passes.prune import count_macs_params
from edgekd.sources import SourceSpec
from edgekd.task_models import TASK_ARCHS, TASK_PAIRS, build_arch

#: dataset -> output shapes per sample (a list for a tuple output)
OUTPUTS = {
    "mnist-seg": (11, 20, 20),
    "mnist-det": [(11, 4, 4), (4, 4, 4)],
    "digits-keypoints": (4,),
    "digits-anomaly": (1, 8, 8),
    "signal-synth": (4,),
    "tokens-synth": (5, 16),
    "tokens-seq": (3,),
}


@functools.cache
def _test_inputs(name: str) -> np.ndarray:
    return task_data.TASK_DATASETS[name](SourceSpec(f"builtin:{name}", "builtin", name, {})).x_test[:3]


def samples(name: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(_test_inputs(name)))


def shapes(out) -> object:
    return [tuple(o.shape[1:]) for o in out] if isinstance(out, tuple) else tuple(out.shape[1:])


@pytest.mark.parametrize("name", list(TASK_PAIRS))
def test_pair_runs_on_its_dataset_and_costs(name):
    teacher_name, student_name, shape, dtype = TASK_PAIRS[name]
    x = samples(name)
    assert tuple(x.shape[1:]) == shape and x.dtype == dtype
    macs = {}
    for arch in (teacher_name, student_name):
        torch.manual_seed(0)
        model = build_arch(arch).eval()
        with torch.no_grad():
            out = model(x)
        assert shapes(out) == OUTPUTS[name], arch
        macs[arch] = count_macs_params(model, x[:1])[0]
    ratio = macs[teacher_name] / macs[student_name]
    assert 4 <= ratio <= 10, (name, macs)


def test_detector_boxes_are_in_image_coordinates_of_their_cell():
    model = build_arch("det-student").eval()
    with torch.no_grad():
        cls, boxes = model(samples("mnist-det"))
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2 * 4  # in cells
    cols = torch.arange(4).expand_as(centre_x)
    assert torch.all((centre_x >= cols) & (centre_x <= cols + 1))  # each cell's box centre lies in that cell
    assert torch.all(boxes[:, 2] >= boxes[:, 0]) and torch.all(boxes[:, 3] >= boxes[:, 1])
    # the output format is what the metric decodes
    dets = metrics.decode_grid(cls.numpy(), boxes.numpy(), score_threshold=0.0)
    assert len(dets) == 3 and all(len(d) == 16 for d in dets)


def test_keypoint_net_starts_at_the_image_centre():
    model = build_arch("keypoints-student").eval()
    for p in model.head[-1].parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        assert torch.allclose(model(samples("digits-keypoints")), torch.full((3, 4), 16.0))


@pytest.mark.parametrize("arch", ["det-student", "tokens-teacher", "tokens-seq-student", "ae-student"])
def test_exports_to_onnx_with_the_same_outputs(arch):
    import onnxruntime as ort

    dataset = next(name for name, pair in TASK_PAIRS.items() if arch in pair[:2])
    x = samples(dataset)
    model = build_arch(arch).eval()
    with torch.no_grad():
        ref = model(x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                      dynamic_axes={"input": {0: "n"}})
    session = ort.InferenceSession(buffer.getvalue())
    assert session.get_inputs()[0].type == ("tensor(int64)" if x.dtype == torch.int64 else "tensor(float)")
    outs = session.run(None, {"input": x.numpy()})
    assert len(outs) == len(ref)
    for got, want in zip(outs, ref, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_overrides_and_unknown_names():
    assert build_arch("signal-student", num_classes=3).head.out_features == 3
    with pytest.raises(SourceError, match="unknown task architecture"):
        build_arch("seg-tiny")
    assert {pair[0] for pair in TASK_PAIRS.values()} | {pair[1] for pair in TASK_PAIRS.values()} == set(TASK_ARCHS)
