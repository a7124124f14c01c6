"""The zoo's three architecture families (VGG-, AlexNet- and ResNet-style), small enough for a CPU.

Every model takes images in [0, 1] and returns logits; its conv and pool layers have readable
names, and all ReLUs are out-of-place, so forward hooks see the conv outputs unchanged.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

def _standardize(x: torch.Tensor) -> torch.Tensor:
    # Fixed centring of [0, 1] pixels, part of the model: without batch norm, a plain
    # VGG/AlexNet learns far faster from zero-centred inputs. A constant affine map, so the
    # model still takes [0, 1] images and decoys keep their pixel-range constraint.
    return (x - 0.5) / 0.25


def _init_plain(model: nn.Module) -> None:
    # He initialisation as in torchvision's VGG: keeps activations alive through a plain
    # (batch-norm-free) stack of ReLU convolutions.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    # oneDNN's CPU convolutions are 2-4x faster (backward especially) on channels-last
    # tensors; converting once at the input makes every conv below use them. Values and
    # shapes are unchanged, so callers never see the difference.
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class VGGStyle(nn.Module):
    """VGG-style network: blocks of 3x3 convolutions (padding 1) + ReLU, each block closed by a
    2x2 max-pool, then ``fc1 -> relu_fc1 -> fc2``. Layer names follow the VGG papers:
    ``features.conv{block}_{i}``, ``features.relu{block}_{i}``, ``features.pool{block}``.

    Args:
        blocks: per block, the widths of its convolutions, e.g. ``((8,), (16,), (32, 32))``.
        in_channels, image_size, num_classes: input and output sizes.
        hidden: width of the hidden fully connected layer.
    """

    def __init__(self, blocks: Sequence[Sequence[int]], *, in_channels: int, image_size: int, num_classes: int, hidden: int = 128):
        super().__init__()
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        c = in_channels
        for b, widths in enumerate(blocks, start=1):
            for i, w in enumerate(widths, start=1):
                layers[f"conv{b}_{i}"] = nn.Conv2d(c, w, 3, padding=1)
                layers[f"relu{b}_{i}"] = nn.ReLU(inplace=False)
                c = w
            layers[f"pool{b}"] = nn.MaxPool2d(2)
        self.features = nn.Sequential(layers)
        side = image_size // 2 ** len(blocks)
        self.classifier = nn.Sequential(
            OrderedDict(fc1=nn.Linear(c * side * side, hidden), relu_fc1=nn.ReLU(inplace=False), fc2=nn.Linear(hidden, num_classes))
        )
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(_fast_layout(_standardize(x))), 1))


class AlexNetStyle(nn.Module):
    """AlexNet-style network for 64x64 images: a large strided first convolution (7x7,
    stride 2), a 5x5 convolution, three 3x3 convolutions, overlapping 3x3/2 max-pools, and
    three fully connected layers. Names: ``features.conv1`` ... ``features.conv5``,
    ``features.relu1`` ..., ``features.pool1``, ``features.pool2``, ``features.pool5``.
    """

    def __init__(self, *, in_channels: int = 3, num_classes: int = 6, widths=(16, 32, 48, 48, 32), hidden: int = 128):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, w1, 7, stride=2, padding=3),  # 64 -> 32
                relu1=nn.ReLU(inplace=False),
                pool1=nn.MaxPool2d(3, stride=2, padding=1),  # -> 16
                conv2=nn.Conv2d(w1, w2, 5, padding=2),
                relu2=nn.ReLU(inplace=False),
                pool2=nn.MaxPool2d(3, stride=2, padding=1),  # -> 8
                conv3=nn.Conv2d(w2, w3, 3, padding=1),
                relu3=nn.ReLU(inplace=False),
                conv4=nn.Conv2d(w3, w4, 3, padding=1),
                relu4=nn.ReLU(inplace=False),
                conv5=nn.Conv2d(w4, w5, 3, padding=1),
                relu5=nn.ReLU(inplace=False),
                pool5=nn.MaxPool2d(3, stride=2, padding=1),  # -> 4
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(w5 * 16, hidden),
                relu_fc1=nn.ReLU(inplace=False),
                fc2=nn.Linear(hidden, hidden),
                relu_fc2=nn.ReLU(inplace=False),
                fc3=nn.Linear(hidden, num_classes),
            )
        )
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(_fast_layout(_standardize(x))), 1))


class BasicBlock(nn.Module):
    """ResNet basic block: ``conv1 -> bn1 -> relu1 -> conv2 -> bn2``, plus the shortcut
    (identity, or ``shortcut.conv`` 1x1 + ``shortcut.bn`` when the shape changes), then
    ``relu2``. Separate ReLU modules (out-of-place) so that hooks fire once per use."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(channels))
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetStyle(nn.Module):
    """ResNet-style network for 64x64 images: stem ``conv1`` (5x5, stride 2) + ``bn1`` +
    ``relu``, then ``layer1`` (16 channels, 32x32), ``layer2`` (32, 16x16), ``layer3``
    (64, 8x8) of basic blocks, global ``avgpool`` and ``fc``; names as in torchvision's
    ResNets (``layer2.0.conv1``, ...)."""

    def __init__(self, *, in_channels: int = 3, num_classes: int = 6, widths=(16, 32, 64), blocks=(1, 1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks), start=1):
            stages = []
            for j in range(n):
                stages.append(BasicBlock(c, w, stride=2 if (i > 1 and j == 0) else 1))
                c = w
            setattr(self, f"layer{i}", nn.Sequential(*stages))
        self.n_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(_fast_layout(x))))
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


#: The CI-scale zoo: architecture, data and training configuration of every shipped model.
#: Shapes models see fresh images every epoch (seeds ``SHAPES_TRAIN_SEED + epoch``), so
