"""Reference PyTorch MobileNetV2 and ResNet-50, written out (torchvision is not installed).

MobileNetV2 is torchvision's layout exactly. ResNet-50 follows keras.applications' ResNet50
(the original v1: conv biases, stride on the block's first 1x1 conv) so that both frameworks
run the same arithmetic; ``torchvision_layout=True`` gives torchvision's v1.5 instead (no conv
biases, stride on the 3x3). The benchmark prints both parameter counts next to Keras'.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin, cout, k, stride=1, groups=1, act=True, bias=False, eps=1e-3):
    layers = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(cout, eps=eps),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=False),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2 (width 1.0) without the classifier's dropout."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
    SETTINGS += ((6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int):
        super().__init__()
        layers, cin = [_conv_bn(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride, bias, torchvision_layout):
        super().__init__()
        cout = width * 4
        s1, s3 = (1, stride) if torchvision_layout else (stride, 1)
        eps = 1e-5 if torchvision_layout else 1.001e-5
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, s1, bias=bias),
            nn.BatchNorm2d(width, eps=eps),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, s3, 1, bias=bias),
            nn.BatchNorm2d(width, eps=eps),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=bias),
            nn.BatchNorm2d(cout, eps=eps),
        )
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=bias), nn.BatchNorm2d(cout, eps=eps)
            )

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(self.body(x) + identity)


class ResNet50(nn.Module):
    """ResNet-50 v1 as keras.applications builds it (or torchvision's v1.5)."""

    def __init__(self, num_classes: int, torchvision_layout: bool = False):
        super().__init__()
        bias = not torchvision_layout
        eps = 1e-5 if torchvision_layout else 1.001e-5
        layers = [
            nn.Conv2d(3, 64, 7, 2, 3, bias=bias),
            nn.BatchNorm2d(64, eps=eps),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        cin = 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for i in range(blocks):
                layers.append(
                    Bottleneck(cin, width, stride if i == 0 else 1, bias, torchvision_layout)
                )
                cin = width * 4
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build(name: str, num_classes: int) -> nn.Module:
    """``name``: "mobilenetv2", "resnet50" (Keras' layout) or "resnet50_tv" (torchvision's)."""
    if name == "mobilenetv2":
        return MobileNetV2(num_classes)
    if name in ("resnet50", "resnet50_tv"):
        return ResNet50(num_classes, torchvision_layout=name == "resnet50_tv")
    raise ValueError(f"Unknown model {name!r}. Accepted: mobilenetv2, resnet50, resnet50_tv.")
