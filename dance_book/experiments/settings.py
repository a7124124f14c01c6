"""Frozen settings of the book's experiments, per scale (``DANCE_SCALE=ci|paper``).

Everything here was fixed before any experiment was run and is never tuned towards the paper's
claims. Where the paper's Table A2 transfers it is used: ``c = 1e4``, ``patch_size = 3``, the
tau schedule (initial value, factor 0.95). Where it does not, the choice and the reason:

* **epsilon.** Table A2's ``epsilon = 200`` is in VGG16's activation units on the paper's
  (unstated) input scaling and means nothing for another network. We use the relative form,
  ``epsilon = 0.1 * max|F_l(x)|`` for every model and layer, fixed a priori.
* **layer.** Table A2 picks layer 3 of VGG16, 6 of AlexNet and 2 of ResNet in torchvision's
  module order: the second convolution of VGG16 (after ReLU), the third convolution of AlexNet
  and the stem of ResNet. Our small networks get the layer at the same *position*: the second
  conv layer of the VGG-style network, the third of the AlexNet-style one and the stem conv of
  the ResNet-style one.
* **stride.** Table A2 uses stride 1 (overlapping patches); at CI scale we tile patches
  (stride = patch size) so that the book runs on two CPU cores; paper scale uses stride 1.
* **base methods.** SmoothGrad: noise std 0.15 of the [0, 1] pixel range (Smilkov et al.'s
  10-20 %), 8 samples at CI scale and 50 at paper scale; Integrated Gradients: black baseline,
  16 Riemann steps at CI scale and 50 at paper scale (CI scale halves the usual counts so that the
  whole book runs on two CPU cores: every base map is computed on every decoy).
* **SmoothGrad's noise inside DANCE-SmoothGrad** (``smoothgrad_noise``, issue 12). ``"common"``
  (the default): the image and each of its decoys get the same SmoothGrad noise draws (common
  random numbers, :class:`dance.DecoyEnhanced`'s ``common_noise``), so the range over a
  population measures the decoys, not Monte-Carlo noise. ``"independent"``: every member gets its
  own draws, the paper-literal reading (the base method run as it is on every member). With
  independent noise, the range over as many SmoothGrad draws of the image alone, without decoys
  (:func:`dance_book.experiments.maps.noise_only_control`), is nearly as large as the DANCE map.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Tuple

from ..scale import current_scale

#: The paper's Table A2, verbatim (layer index in torchvision module order).
TABLE_A2 = {
    "alexnet": dict(layer=6, c=10000, epsilon=200, patch_size=3, stride=1, tau=1),
    "vgg16": dict(layer=3, c=10000, epsilon=200, patch_size=3, stride=1, tau=1),
    "resnet": dict(layer=2, c=10000, epsilon=200, patch_size=3, stride=1, tau=1),
}

#: Decoy layer of each model, chosen by position as in Table A2 (see the module docstring).
DECOY_LAYER = {
    "vgg-shapes": "features.conv2_1",
    "vgg-digits": "features.conv2_1",
    "alexnet-shapes": "features.conv3",
    "resnet-shapes": "conv1",
    "vgg16": "model.features.3",
    "alexnet": "model.features.6",
    "resnet50": "model.relu",
    "resnet18": "model.relu",
}


@dataclass(frozen=True)
class DecoySettings:
    epsilon: float = 0.1
    relative: bool = True
    patch_size: int = 3
    stride: Optional[int] = None
    c: float = 1e4
    tau: float = 1.0
    tau_decay: float = 0.95
    seed: int = 0

    def options(self) -> dict:
        """Keyword arguments for :func:`dance.generate_decoys` / :class:`dance.DecoyEnhanced`."""
        d = asdict(self)
        d.pop("epsilon")
        return d


#: Values of :attr:`Settings.smoothgrad_noise`: the same SmoothGrad draws for an image and its decoys, or
#: independent draws for every member of a population (the paper-literal reading).
SMOOTHGRAD_NOISE = ("common", "independent")


@dataclass(frozen=True)
class Settings:
    """Everything an experiment chapter needs to know about its scale."""

    scale: str
    main_model: str
    architectures: Tuple[str, ...]
    dataset: str
    decoys: DecoySettings
    smoothgrad_samples: int
    smoothgrad_std: float
    ig_steps: int
    n_fidelity: int       # images for the fidelity experiments (paper Fig. 3)
    n_attack: int         # images per attack and method (paper Fig. 4)
    n_small: int          # images for the per-layer / per-architecture / per-c sweeps
    seed: int = 0
    extra: Dict[str, object] = field(default_factory=dict)
    smoothgrad_noise: str = "common"  # one of SMOOTHGRAD_NOISE; in repr, so in every cache key

    def __post_init__(self):
        if self.smoothgrad_noise not in SMOOTHGRAD_NOISE:
            raise ValueError(f"smoothgrad_noise must be one of {SMOOTHGRAD_NOISE}, got {self.smoothgrad_noise!r}; "
                             f"e.g. dataclasses.replace(settings, smoothgrad_noise='independent')")

    @property
    def common_noise(self) -> bool:
        """Whether DANCE-SmoothGrad shares its noise draws between an image and its decoys."""
        return self.smoothgrad_noise == "common"

    def layer(self, model: str) -> str:
        return DECOY_LAYER[model]

    def with_decoys(self, **changes) -> "Settings":
        return replace(self, decoys=replace(self.decoys, **changes))

    @property
    def smoke(self) -> bool:
        """Whether these are the paper-scale smoke run's settings (:data:`PAPER_SMOKE`: ``extra["smoke"]`` set), which
        shrink every experiment to a few seconds so that each kind of cell runs once."""
        return bool(self.extra.get("smoke"))

    def sweep(self, values: Iterable, keep: Iterable = ()) -> List:
        """The values of a sweep (layers, c values, epsilons, attack shares) that a chapter runs at these settings.

        All of ``values``, in order, except in the paper-scale smoke run (:data:`PAPER_SMOKE`, whose
        ``extra["smoke"]`` is set): there only the first and the last value and those in ``keep`` (the
        reference a chapter compares with), in their order, so that every kind of cell still runs once.
        This is the one place where the smoke run shortens a sweep; a new list, ``values`` is not changed.

        Example:
            >>> from dance_book.experiments.settings import PAPER, PAPER_SMOKE
            >>> PAPER.sweep([1, 2, 3, 4, 5]), PAPER_SMOKE.sweep([1, 2, 3, 4, 5], keep=[4])
            ([1, 2, 3, 4, 5], [1, 4, 5])
        """
        values = list(values)
        if not self.smoke:
            return values
        keep = list(keep)
        return [v for i, v in enumerate(values) if i in (0, len(values) - 1) or v in keep]


CI = Settings(
    scale="ci", main_model="vgg-shapes",
    architectures=("alexnet-shapes", "vgg-shapes", "resnet-shapes"), dataset="shapes",
    decoys=DecoySettings(stride=None), smoothgrad_samples=8, smoothgrad_std=0.15, ig_steps=16,
    n_fidelity=50, n_attack=30, n_small=16,
)

PAPER = Settings(
    scale="paper", main_model="vgg16", architectures=("alexnet", "vgg16", "resnet50"),
    dataset="imagenet", decoys=DecoySettings(stride=1), smoothgrad_samples=50, smoothgrad_std=0.15,
    ig_steps=50, n_fidelity=100, n_attack=50, n_small=24,
)


#: Test-only switch: ``DANCE_PAPER_SMOKE=1`` shrinks paper scale to :data:`PAPER_SMOKE`, so that the CI
#: smoke test runs the paper-scale code path (torchvision models, an image folder) in seconds.
SMOKE_ENV = "DANCE_PAPER_SMOKE"

#: Paper scale in miniature, for the smoke test only: the same models, layers and code path, with
#: two images per experiment (one per attack run: ``n_attack``, which only the attacks chapter reads), 64 x 64
#: crops (the smallest AlexNet accepts; the others pool adaptively), tiled 32 x 32 patches (a 2 x 2 grid: at
#: most four masks per image, where 3 x 3 patches give up to 21 x 21 = 441 at AlexNet's deep decoy layer; one
#: 64 x 64 patch would leave inpainting no pixel to fill from), one SmoothGrad sample and one IG step (the
#: adaptive attack's too), two Adam steps per decoy and one attack step.
#: Every sweep of a chapter (layers, c values, epsilons, top-k shares) runs at its ends only
#: (:meth:`Settings.sweep`), and the attacks chapter runs each attack on one method and the random-sign control
#: on every method (:func:`dance_book.experiments.attacks.study_pairs`), each strong attack kind on one method
#: (:func:`dance_book.experiments.attacks.strong_pairs`), and the adaptive chapter each of its studies on one
#: method and one image (:data:`dance_book.experiments.adaptive.SMOKE_METHODS`). Its numbers mean nothing; it
#: checks that everything runs.
PAPER_SMOKE = replace(PAPER, decoys=DecoySettings(stride=None, patch_size=32), smoothgrad_samples=1, ig_steps=1,
                      n_fidelity=2, n_attack=1, n_small=2,
                      extra={"smoke": True, "resize": 72, "crop": 64, "adam_steps": 2, "attack_iterations": 1})


def smoke_enabled() -> bool:
    """Whether the test-only ``DANCE_PAPER_SMOKE`` switch is on."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in ("1", "true", "yes")


def settings(scale: Optional[str] = None) -> Settings:
    """The frozen settings for ``scale`` (default: the ``DANCE_SCALE`` environment variable).

    At paper scale the test-only switch ``DANCE_PAPER_SMOKE=1`` gives :data:`PAPER_SMOKE` instead.
    """
    scale = scale or current_scale()
    if scale == "ci":
        return CI
    if scale == "paper":
        return PAPER_SMOKE if smoke_enabled() else PAPER
    raise ValueError(f"scale must be 'ci' or 'paper', got {scale!r}")
