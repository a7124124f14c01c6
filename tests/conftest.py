"""Shared fixtures for the unit tests: fixed seeds, tiny models, and an independent layer probe.

Every model is built from an explicit seed inside ``torch.random.fork_rng`` so that building
one never disturbs the global random state, and every model is returned in eval mode (the
decoy constraint is a property of the deployed network). The helpers are exposed as
session-scoped fixtures returning plain functions, so module-scoped fixtures can use them.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import dance
from helpers import FAST, IMAGE_SIZE, CallCounter, deviations_one_at_a_time, layer_output

# The models here are tiny: intra-op threads only add synchronisation, and on a loaded 2-core CI
# machine OpenMP spin-waiting made the suite ~50x slower (measured: 5.9 s vs 0.04 s for one
# decoy batch). One thread keeps every test fast and its timing stable.
torch.set_num_threads(1)
# The unit tests compute every result: the committed results store (dance_book.experiments.store) is
# for the book, and the store's own tests switch it on where they test it.
os.environ.setdefault("DANCE_RESULTS", "off")



@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same global random state."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _vgg() -> nn.Module:
    # Two 3x3 conv blocks and a head: the shape of the early VGG stages the paper uses.
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),        # 0, 1
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),        # 2, 3
        nn.MaxPool2d(2),                                 # 4
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),       # 5, 6
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),           # 7, 8
        nn.Linear(12, 5),                                # 9
    )


def _bn() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),   # 0, 1, 2
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),   # 3, 4, 5
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5),      # 6, 7, 8
    )
    # Non-trivial running statistics, so eval-mode batch norm is not the identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


def _resnet() -> nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=5)


def _dropout_bn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),   # 0, 1, 2
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),                      # 3, 4
        nn.Dropout(0.5), nn.AdaptiveAvgPool2d(2), nn.Flatten(),        # 5, 6, 7
        nn.Linear(24, 4),                                              # 8
    )


_BUILDERS = {
    "vgg": _vgg,
    "bn": _bn,
    "resnet": _resnet,
    "normalized": lambda: dance.Normalized(_vgg(), dance.IMAGENET_MEAN, dance.IMAGENET_STD),
    "dropout_bn": _dropout_bn,
}

# Input side used with each model: small, but the ResNet stem downsamples by 4.


@pytest.fixture(scope="session")
def make_model():
    """``make_model(kind, seed=0)``: a fresh tiny model in eval mode (kinds: vgg, bn, resnet, normalized, dropout_bn)."""
    def make(kind: str, seed: int = 0) -> nn.Module:
        return _seeded(seed, _BUILDERS[kind]).eval()
    return make


@pytest.fixture(scope="session")
def make_image():
    """``make_image(size, seed=0, channels=3, batch=None)``: uniform pixels in [0, 1) from a private generator."""
    def make(size: int, seed: int = 0, channels: int = 3, batch=None) -> torch.Tensor:
        g = torch.Generator().manual_seed(1000 + seed)
        shape = (channels, size, size) if batch is None else (batch, channels, size, size)
        return torch.rand(*shape, generator=g)
    return make


@pytest.fixture(scope="session")
def layer_out():
    return layer_output


@pytest.fixture(scope="session")
def deviations():
    return deviations_one_at_a_time


@pytest.fixture(scope="session")
def fast():
    """Decoy options that keep tests quick where convergence is not the property under test."""
    return dict(FAST)


@pytest.fixture(scope="session")
def image_size():
    return dict(IMAGE_SIZE)


@pytest.fixture(scope="session")
def call_counter():
    """``call_counter([(name, module), ...])``: a context manager counting forward calls per module."""
    return CallCounter


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="session")
def cuda_only():
    """Skip the requesting test unless CUDA is available."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The CI settings shrunk for the experiment tests: 2 images, 8x8 patches (few decoys), 20 Adam steps per
    decoy round instead of 200 (the tests check shapes, constraints and identities, which hold at any step
    budget), and a private experiment cache for the module. (A module may define its own ``tiny``, which then
    wins.)"""
    import dataclasses

    import dance_book.experiments as E

    from dance_book.experiments import hyperparameters, layers, localization

    old = os.environ.get("DANCE_CACHE_DIR")
    os.environ["DANCE_CACHE_DIR"] = str(tmp_path_factory.mktemp("dance-cache"))
    mp = pytest.MonkeyPatch()
    for module in (hyperparameters, layers, localization):  # the claims at these settings' own images: no powered run
        mp.setattr(module, "POWERED_SCALES", ())
    ci = E.settings("ci")
    yield dataclasses.replace(ci, n_attack=2, n_fidelity=2, decoys=dataclasses.replace(ci.decoys, patch_size=8),
                              extra={**ci.extra, "adam_steps": 20})
    mp.undo()
    if old is None:
        os.environ.pop("DANCE_CACHE_DIR", None)
    else:
        os.environ["DANCE_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def shapes_once():
    """Generate each Shapes set once per module: ``dance_book.data.shapes`` renders a whole chunk of 256 images
    (about 0.4 CPU s) for every call, and the experiment code calls it for each of its few images' loads. The
    stand-in returns the real function's output (computed on the first call with those arguments) as fresh
    tensors, so a caller that changes its copy changes nothing else. For experiment modules that do not test the
    generator (tests/test_data.py does, and must not use this)."""
    import dance_book.data as data

    real, memo = data.shapes, {}

    def shapes(*args, **kwargs):  # the real signature and defaults: only the key is spelled here
        key = (args, tuple(sorted(kwargs.items())))
        if key not in memo:
            memo[key] = real(*args, **kwargs)
        d = memo[key]
        return data.ImageSet(images=d.images.clone(), labels=d.labels.clone(), classes=d.classes,
                             masks=d.masks.clone(), boxes=d.boxes.clone(), names=d.names)

    mp = pytest.MonkeyPatch()
    mp.setattr(data, "shapes", shapes)
    yield
    mp.undo()
