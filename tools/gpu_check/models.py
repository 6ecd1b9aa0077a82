"""Models for the prepared GPU check's bundles (``py:tools/gpu_check/models.py:resnet18_narrow``).

torchvision's ResNet-18 hard-codes 64-128-256-512 channels: its fp32 weights are 47 MB, and a bundle holds the
weights two or three times (model.onnx, the TensorRT variant, the target's copy), so three resnet18 bundles do
not fit the GPU machine's 64 MiB carry limit. This is the same topology (torchvision's BasicBlock, stages of
2-2-2-2 blocks, strided 1x1 downsample shortcuts, residual Adds) with a configurable base width: ``width=32``
gives 32-64-128-256 channels, about a quarter of the parameters, and still has 256-input-channel 3x3 convs in
its last stage, the size where TensorRT starts to pick 2:4 sparse tactics.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock


def resnet18_narrow(width: int = 32, num_classes: int = 10) -> nn.Module:
    """ResNet-18 with ``width``-``2*width``-``4*width``-``8*width`` channels (torchvision's is ``width=64``)."""
    if width < 4 or width % 4:
        raise ValueError(f"width must be a positive multiple of 4 (2:4 groups of input channels), got {width}")
    layers: list[nn.Module] = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    inplanes = width
    for stage, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
        stride = 1 if stage == 0 else 2
        down = None
        if stride != 1 or inplanes != planes:
            down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers += [BasicBlock(inplanes, planes, stride, down), BasicBlock(planes, planes)]
        inplanes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inplanes, num_classes)]
    model = nn.Sequential(*layers)
    for m in model.modules():  # torchvision's initialisation, so random-weight activations stay in range
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
