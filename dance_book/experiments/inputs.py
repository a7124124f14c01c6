"""Models and images of the experiments, at either scale, and the decoys they share (cached)."""
from __future__ import annotations

from functools import lru_cache
import sys
from typing import List, Optional

from torch import nn

from ..data import ImageSet
from dance.decoys import Decoys
from .cache import cached
from .maps import optimised_decoys
from .settings import Settings

#: Seed of the Shapes images the experiments use: a stream no model was trained or selected on.
EXPERIMENT_SEED = 2026


@lru_cache(maxsize=8)
def load_model(name: str) -> nn.Module:
    """A zoo model (CI scale) or a torchvision ImageNet model (paper scale), in eval mode, on the device.

    Paper-scale models have their ImageNet weights (:func:`dance_book.imagenet.paper_model`; random
    weights only under the smoke test's explicit test-only switch).
    """
    from .. import zoo
    from ..imagenet import paper_model
    from ..scale import default_device

    if name in zoo.IMAGENET_MODELS:
        return paper_model(name, device=default_device())
    return zoo.load(name, device=default_device())


#: Why measures that need object masks are missing for an image folder without boxes.
MASKS_MISSING = ("not available: the images carry no ground-truth boxes (set DANCE_IMAGENET_BOXES to the "
                 "folder of their Pascal VOC XML files, e.g. ILSVRC2012_bbox_val)")


def masks_unavailable(data: ImageSet) -> Optional[str]:
    """None when ``data`` has object masks, else the reason the measures that need them are not available."""
    return MASKS_MISSING if data.masks is None else None


def object_share(settings: Settings, n: int) -> float:
    """Share of the first ``n`` experiment images' pixels on the object (NaN without masks)."""
    data = load_images(settings, n)
    return float("nan") if data.masks is None else float(data.masks.float().mean())


def load_images(settings: Settings, n: int, *, offset: int = 0) -> ImageSet:
    """``n`` experiment images: generated Shapes (CI scale) or the user's ImageNet folder (paper scale).

    ``offset`` skips images, so that a set used to fix a setting is disjoint from the test images.
    """
    from ..scale import default_device

    if settings.dataset == "shapes":
        from ..data import shapes

        data = shapes(n + offset, seed=EXPERIMENT_SEED).subset(slice(offset, offset + n))
    elif settings.dataset == "imagenet":
        from ..imagenet import IMAGES_ENV, paper_images

        sizes = {k: settings.extra[k] for k in ("resize", "crop") if k in settings.extra}
        data = paper_images(limit=n, start=offset, **sizes)
        if len(data) < n:
            raise ValueError(f"the experiment needs images {offset} to {offset + n - 1} but the folder "
                             f"{IMAGES_ENV} names holds {offset + len(data)}: add images or lower the experiment's n")
    else:
        raise ValueError(f"unknown dataset {settings.dataset!r}")
    device = default_device()
    data.images = data.images.to(device)
    return data


def decoys_key(settings: Settings, model_name: str, n: int, layer: Optional[str] = None, offset: int = 0,
               **overrides):
    """``(layer, images computed, cache configuration)`` of :func:`shared_decoys`' cache entry, which
    the sharded runner (:mod:`dance_book.experiments.shard`) fills in the same place."""
    layer = layer or settings.layer(model_name)
    canonical = not overrides and offset == 0 and n <= settings.n_fidelity
    size = settings.n_fidelity if canonical else n
    config = dict(settings=repr(settings), model=model_name, n=size, layer=layer, offset=offset,
                  overrides=sorted(overrides.items()))
    return layer, size, config


def shared_decoys(settings: Settings, model_name: str, n: int, layer: Optional[str] = None,
                  offset: int = 0, **overrides) -> List[Decoys]:
    """DANCE decoys of the first ``n`` experiment images, cached on disk and shared by chapters.

    Chapters asking for the same model, layer, images and decoy settings get the same decoys
    without recomputing them. Without ``overrides``, any ``n`` up to ``settings.n_fidelity`` is
    served from the one canonical set of ``settings.n_fidelity`` images (each decoy is optimised
    independently of the others in the batch, so the first ``n`` are the decoys of those images).
    """
    layer, size, config = decoys_key(settings, model_name, n, layer, offset, **overrides)

    def compute():
        model = load_model(model_name)
        x = load_images(settings, size, offset=offset).images
        print(f"optimising decoys: {model_name} at {layer}, {size} images ...", file=sys.stderr, flush=True)
        return [d.to("cpu") for d in optimised_decoys(model, x, layer, settings, **overrides)]

    return cached("decoys", config, compute)[:n]


def clean_decoys(settings: Settings, n: int):
    """DANCE decoys of the first ``n`` experiment images, from the cache shared between chapters."""
    if n <= settings.n_fidelity:
        return shared_decoys(settings, settings.main_model, settings.n_fidelity)[:n]
    return shared_decoys(settings, settings.main_model, n)
