"""Model-side remedies for noisy saliency maps, as zoo trainings: PGD adversarial training (Yeh et al., 2019, §3.2
and §4) and SCAAT, saliency-constrained adaptive adversarial training (Xu et al.'s poster).

The training loop (:func:`dance_book.zoo.train` with ``training="adversarial"`` or ``"scaat"``) is built from
the small functions here: :func:`pgd_linf` (the perturbation), :func:`low_saliency_mask` (which features SCAAT
may perturb) and :func:`update_q` (the poster's adaptive search of the irrelevant-feature ratio). Every setting
of each remedy is in one frozen dataclass: :data:`PGD` (:class:`PGDSettings`) and :data:`SCAAT`
(:class:`ScaatReading`, the book's reading of the poster).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from dance.attacks import gradient
from dance.layers import eval_mode

#: The trainings :func:`dance_book.zoo.train` knows.
TRAININGS = ("regular", "adversarial", "scaat")


@dataclass(frozen=True)
class PGDSettings:
    """Projected gradient descent in an :math:`L_\\infty` ball (Madry et al., 2018), as Yeh et al. (2019, §4) use it
    for adversarial training: "L∞ perturbations of norm 0.1 for MNIST".

    Attributes:
        epsilon: radius of the :math:`L_\\infty` ball, in [0, 1] pixels (Yeh et al.'s MNIST setting, 0.1).
        steps: sign-gradient ascent steps on the cross-entropy (the paper does not say; 5 at CI scale).
        step_size: size of each step; ``2.5 * epsilon / steps``, Madry et al.'s rule, so the steps can cross the ball.
        random_start: start from a point drawn uniformly in the ball (Madry et al.), not from the image.
    """

    epsilon: float = 0.1
    steps: int = 5
    step_size: float = 0.05
    random_start: bool = True


#: The PGD of adversarial training (and of SCAAT's perturbation, see :class:`ScaatReading`).
PGD = PGDSettings()


@dataclass(frozen=True)
class ScaatReading:
    """The book's reading of the SCAAT poster (Xu, Qin, Huang, Wang, Luo: "SCAAT: Improving Neural Network
    Interpretability via Saliency Constrained Adaptive Adversarial Training"; ``shared/papers/scaat-poster.txt``).

    From the poster: each training sample ``i`` carries an irrelevant-feature ratio ``q_i``; its adversarial
    example ``X_i^adv`` perturbs only the ``q_i`` fraction of its features with the lowest saliency under the
    current model; the model is trained on it with the true label ``y_i``; after ``N_warm-up`` iterations,
    ``q_i += gamma`` when ``f(X_i^adv)`` still predicts ``y_i`` and ``q_i -= gamma`` otherwise, clipped to
    ``[q_min, q_max]`` (its algorithm "Irrelevant Feature Ratio Searching", :func:`update_q`).

    The poster leaves the rest open; the book chooses, before training:

    Attributes:
        saliency: ``"gradient"``: the vanilla gradient of the true class's logit, ``|dF_y/dx|``
            (:func:`dance.attacks.gradient`), under the current model in eval mode, recomputed at every visit
            of the sample.
        feature: ``"pixel"``: a feature is a pixel location; its saliency is the sum over channels of ``|dF_y/dx|``,
            and a perturbed pixel is perturbed in every channel. The ``q_i`` fraction is ``round(q_i * H * W)``
            pixels, the least salient first (ties by position).
        epsilon, steps, step_size, random_start: the perturbation, :func:`pgd_linf` restricted to those pixels:
            the same :math:`L_\\infty` PGD as adversarial training (:data:`PGD`), so that the two remedies differ
            only in where they perturb and in the adaptive ratio.
        clean_weight: the loss is ``clean_weight * CE(f(X_i), y_i) + (1 - clean_weight) * CE(f(X_i^adv), y_i)``
            (0.5: the clean and the adversarial copy weigh the same).
        q_init, q_min, q_max, gamma: the ratio's start, bounds and step.
        warmup: ``N_warm-up``, counted in epochs: the poster's iteration index of a sample is read as the number of
            its visits (epoch 1, 2, ...), and ``q_i`` is left alone while it is ``<= warmup``.
        q_from_prediction_before_step: ``True``: whether ``f(X_i^adv)`` predicts ``y_i`` is read from the logits of
            the training step's forward pass (the model before that step's update).
        data: ``"fixed"``: ``q_i`` belongs to a sample, so SCAAT trains on a fixed set visited every epoch (Digits'
            train split; on Shapes the first epoch's images, seed ``SHAPES_TRAIN_SEED``, revisited every epoch,
            whereas regular and adversarial training see fresh Shapes images every epoch).
    """

    saliency: str = "gradient"
    feature: str = "pixel"
    epsilon: float = PGD.epsilon
    steps: int = PGD.steps
    step_size: float = PGD.step_size
    random_start: bool = PGD.random_start
    clean_weight: float = 0.5
    q_init: float = 0.5
    q_min: float = 0.1
    q_max: float = 0.9
    gamma: float = 0.05
    warmup: int = 2
    q_from_prediction_before_step: bool = True
    data: str = "fixed"

    def pgd(self) -> PGDSettings:
        """The perturbation's settings as :class:`PGDSettings`."""
        return PGDSettings(self.epsilon, self.steps, self.step_size, self.random_start)


#: The book's reading of the SCAAT poster, the one place its settings live.
SCAAT = ScaatReading()


def settings_of(training: str) -> dict:
    """The settings of ``training`` as a plain dict (for the weights' records): ``{}`` for regular training."""
    if training not in TRAININGS:
        raise ValueError(f"training must be one of {TRAININGS}, got {training!r}")
    return {"regular": {}, "adversarial": asdict(PGD), "scaat": asdict(SCAAT)}[training]


def pgd_linf(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, settings: PGDSettings = PGD,
             mask: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Untargeted :math:`L_\\infty` PGD on the cross-entropy: the adversarial examples of ``inputs``.

    Each step moves ``x_adv`` by ``settings.step_size * sign(grad CE)``, then projects it back into the ball
    ``|x_adv - x| <= settings.epsilon`` and the pixel range [0, 1]. With ``mask``, only the features where the mask is
    True move (the perturbation is zero elsewhere, also the random start). The model runs in eval mode (its
    train/eval flags are restored) and its parameters' ``.grad`` are not touched; ``inputs`` are not modified.

    Args:
        model: classifier returning logits.
        inputs: ``[B, C, H, W]`` images in [0, 1].
        labels: ``LongTensor[B]``, the true classes (the loss the attack increases).
        settings: :class:`PGDSettings` (default :data:`PGD`).
        mask: optional boolean tensor broadcastable to ``inputs`` (e.g. ``[B, 1, H, W]``): the features that may move.
        generator: the random start's generator (CPU); default: a fresh one seeded 0.

    Returns:
        ``[B, C, H, W]`` detached adversarial examples.

    Example:
        >>> import torch
        >>> from dance_book.zoo.remedies import pgd_linf, PGDSettings
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        >>> x = torch.rand(2, 3, 2, 2)
        >>> adv = pgd_linf(net, x, torch.tensor([0, 1]), settings=PGDSettings(epsilon=0.1, steps=3, step_size=0.05))
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6) and bool(adv.min() >= 0) and bool(adv.max() <= 1)
        True
    """
    x = inputs.detach()
    eps = float(settings.epsilon)
    keep = None if mask is None else mask.to(device=x.device, dtype=x.dtype)
    if settings.random_start:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        delta = ((2 * torch.rand(x.shape, generator=gen) - 1) * eps).to(device=x.device, dtype=x.dtype)
    else:
        delta = torch.zeros_like(x)
    if keep is not None:
        delta = delta * keep
    adv = (x + delta).clamp(0.0, 1.0)
    with eval_mode(model), torch.enable_grad():
        for _ in range(settings.steps):
            adv = adv.detach().requires_grad_(True)
            loss = F.cross_entropy(model(adv), labels, reduction="sum")
            step = torch.autograd.grad(loss, adv)[0].sign() * settings.step_size
            if keep is not None:
                step = step * keep
            adv = torch.min(torch.max(adv.detach() + step, x - eps), x + eps).clamp(0.0, 1.0)
    return adv.detach()


def low_saliency_mask(saliency: torch.Tensor, q: Union[float, torch.Tensor]) -> torch.Tensor:
    """The ``q`` fraction of each map's features with the lowest saliency: SCAAT's perturbable features.

    Args:
        saliency: ``[B, ...]`` per-feature saliency (e.g. ``[B, H, W]`` pixels); lower = less relevant.
        q: the fraction per map, a float or a ``[B]`` tensor in [0, 1].

    Returns:
        Boolean tensor of ``saliency``'s shape, True on the ``round(q_i * n)`` features of map ``i`` with the lowest
        saliency (``n`` = features per map; equal values: the earlier position first).

    Example:
        >>> import torch
        >>> from dance_book.zoo.remedies import low_saliency_mask
        >>> low_saliency_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), 0.5).tolist()
        [[False, True, False, True]]
    """
    flat = saliency.detach().flatten(1)
    b, n = flat.shape
    q = torch.as_tensor(q, dtype=torch.float64).flatten().expand(b) if not isinstance(q, torch.Tensor) or q.numel() == 1 \
        else q.detach().double().flatten()
    if q.shape[0] != b or bool((q < 0).any()) or bool((q > 1).any()):
        raise ValueError(f"q must be one fraction in [0, 1] or one per map ({b}), got {q.tolist()}")
    k = torch.round(q * n).long().to(flat.device)
    order = flat.argsort(dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=flat.device).expand(b, n))
    return (rank < k[:, None]).view(saliency.shape)


def update_q(q: torch.Tensor, survived: torch.Tensor, iteration: int, *, warmup: int = SCAAT.warmup,
             gamma: float = SCAAT.gamma, q_min: float = SCAAT.q_min, q_max: float = SCAAT.q_max) -> torch.Tensor:
    """The SCAAT poster's irrelevant-feature ratio search, for a batch of samples (returns new ratios).

    As in the poster's algorithm: if ``iteration <= warmup``, ``q' = q``; else ``q' = q + gamma`` where
    ``f(X_adv)`` still predicts the true label (``survived``) and ``q' = q - gamma`` where it does not; then
    ``q'' = min(max(q', q_min), q_max)``.

    Args:
        q: ``[B]`` current ratios (not modified).
        survived: ``[B]`` bools: does the model still predict ``y_i`` on ``X_i^adv``?
        iteration: the samples' iteration index (1-based; the book counts a sample's visits, i.e. epochs).
        warmup, gamma, q_min, q_max: the poster's ``N_warm-up``, ``gamma``, ``q_min``, ``q_max`` (default :data:`SCAAT`).

    Example:
        >>> import torch
        >>> from dance_book.zoo.remedies import update_q
        >>> update_q(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([True, False, True]), 3, warmup=2, gamma=0.25,
        ...          q_min=0.25, q_max=0.75).tolist()
        [0.75, 0.25, 0.75]
    """
    if iteration <= warmup:
        new = q.detach().clone()
    else:
        new = torch.where(survived.to(torch.bool), q.detach() + gamma, q.detach() - gamma)
    return new.clamp(q_min, q_max)


def scaat_examples(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, q: torch.Tensor, *,
                   reading: ScaatReading = SCAAT, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """SCAAT's adversarial examples: :func:`pgd_linf` on the ``q_i`` fraction of each image's least salient pixels
    (saliency and pixels as :class:`ScaatReading` says). Returns ``[B, C, H, W]``; nothing passed in is modified."""
    saliency = gradient(model, inputs, labels).abs().sum(dim=1)  # [B, H, W], per pixel
    mask = low_saliency_mask(saliency, q).unsqueeze(1)  # [B, 1, H, W]: every channel of a chosen pixel
    return pgd_linf(model, inputs, labels, settings=reading.pgd(), mask=mask, generator=generator)
