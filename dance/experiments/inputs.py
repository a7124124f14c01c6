"""Models and images of the experiments, at either scale, and the decoys they share (cached)."""
from __future__ import annotations

from functools import lru_cache
import sys
from typing import List, Optional

import torch
from torch import nn

from ..data import ImageSet
from ..decoys import Decoys
from .cache import cached
from .maps import optimised_decoys
from .settings import Settings

#: Seed of the Shapes images the experiments use: a stream no model was trained or selected on.
EXPERIMENT_SEED = 2026


@lru_cache(maxsize=8)
def load_model(name: str) -> nn.Module:
    """A zoo model (CI scale) or a torchvision ImageNet model (paper scale), in eval mode, on the device."""
    from .. import zoo
    from ..scale import default_device

    if name in zoo.IMAGENET_MODELS:
        return zoo.imagenet(name, device=default_device())
    return zoo.load(name, device=default_device())


def load_images(settings: Settings, n: int, *, offset: int = 0) -> ImageSet:
    """``n`` experiment images: generated Shapes (CI scale) or the user's ImageNet folder (paper scale).

    ``offset`` skips images, so that a set used to fix a setting is disjoint from the test images.
    """
    from ..scale import default_device

    if settings.dataset == "shapes":
        from ..data import shapes

        data = shapes(n + offset, seed=EXPERIMENT_SEED).subset(slice(offset, offset + n))
    elif settings.dataset == "imagenet":
        from ..imagenet import paper_images

        data = paper_images(limit=n + offset).subset(slice(offset, offset + n))
    else:
        raise ValueError(f"unknown dataset {settings.dataset!r}")
    device = default_device()
    data.images = data.images.to(device)
    return data


def shared_decoys(settings: Settings, model_name: str, n: int, layer: Optional[str] = None,
                  offset: int = 0, **overrides) -> List[Decoys]:
    """DANCE decoys of the first ``n`` experiment images, cached on disk and shared by chapters.

    Chapters asking for the same model, layer, images and decoy settings get the same decoys
    without recomputing them. Without ``overrides``, any ``n`` up to ``settings.n_fidelity`` is
    served from the one canonical set of ``settings.n_fidelity`` images (each decoy is optimised
    independently of the others in the batch, so the first ``n`` are the decoys of those images).
    """
    layer = layer or settings.layer(model_name)
    canonical = not overrides and offset == 0 and n <= settings.n_fidelity
    size = settings.n_fidelity if canonical else n
    config = dict(settings=repr(settings), model=model_name, n=size, layer=layer, offset=offset,
                  overrides=sorted(overrides.items()))

    def compute():
        model = load_model(model_name)
        x = load_images(settings, size, offset=offset).images
        print(f"optimising decoys: {model_name} at {layer}, {size} images ...", file=sys.stderr, flush=True)
        return [d.to("cpu") for d in optimised_decoys(model, x, layer, settings, **overrides)]

    return cached("decoys", config, compute)[:n]
