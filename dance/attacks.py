r"""Adversarial attacks on saliency maps, after Ghorbani, Abid & Zou (2019), as used in DANCE §4.2.

The attacks look for an imperceptible perturbation :math:`\hat x`, :math:`\|\hat x - x\|_\infty
\le \epsilon`, :math:`\hat x \in [0, 1]`, that leaves the predicted class unchanged but changes
the saliency map:

* **top-k** (:func:`topk_attack`): lower the saliency of the ``k`` pixels that were most salient
  in the original map (DANCE paper: k = 5000 of 224x224 pixels);
* **targeted** (:func:`targeted_attack`): raise the saliency inside a target region (DANCE
  paper: the bottom-right 4x4 pixels of a 224x224 image; here a bottom-right square whose side
  is the same fraction, 4/224, of the image side, at least 4 pixels, :func:`target_region`);
* **mass-center** (:func:`mass_center_attack`): move the saliency centre of mass away from
  where it was;
* **random sign** (:func:`random_sign_attack`): the control, :math:`\hat x = x + \epsilon \cdot
  \operatorname{sign}(n)` with Gaussian :math:`n`, which shows how much the map moves under a
  perturbation of the same size that is not aimed at it.

**Algorithm** (Ghorbani et al.'s iterative attack). Each iteration takes a signed-gradient step
of size ``step_size`` on the attack objective, then projects back onto the :math:`L_\infty` ball
and into [0, 1]. The gradient of a gradient map of a ReLU network with respect to its input is
zero almost everywhere, so the *directions* are computed on a deep copy of the model whose
``nn.ReLU`` modules are replaced by ``nn.Softplus(beta)`` (:func:`softplus_copy`); ReLUs called
functionally (``F.relu`` inside ``forward``) are out of scope and stay ReLUs (a warning is issued
when the model has no ``nn.ReLU`` module at all). Every iterate is then checked on the
*original* model: it counts only if the predicted class is unchanged, and among the valid
iterates the one whose original-model map scores best on the attack's objective is returned, per
image (batched over images). Iterates that change the label are not returned, but the walk goes
on from them (Ghorbani et al. keep the best valid iterate, not a constrained walk).

**Explanations** are functions ``explain(model, inputs, target, create_graph=False)`` that are
differentiable in the inputs when ``create_graph=True``: :func:`gradient`, :func:`smoothgrad`
(fixed noise seed, so the map is a deterministic function of the input) and
:func:`integrated_gradients` (Riemann sums) are implemented here with
:func:`torch.autograd.grad` because Captum's ``attribute`` does not build a graph for second
derivatives; they agree with Captum's ``Saliency(abs=False)``, ``NoiseTunnel`` and
``IntegratedGradients`` (see the tests). Any other differentiable function with that signature
works too. Maps that are not differentiable in the input (such as :class:`dance.DecoyEnhanced`,
whose decoys come from an optimisation) are evaluated *on* the attacked inputs instead: attack
the base method, then explain :attr:`AttackResult.inputs` with any explainer.

**Measures** (:class:`AttackResult`), all between maps of the original and the perturbed input
computed on the *original* model with the attacked explanation: top-k intersection, Spearman
rank correlation and centre-of-mass shift on Ghorbani et al.'s map (absolute attributions summed
over colour channels), and :math:`S_S` (:func:`dance.metrics.sensitivity`) on the paper's
[0, 1] heatmaps (:func:`dance.to_heatmap`).
"""
from __future__ import annotations

import copy
import functools
import inspect
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
from torch import nn

from ._checks import (TargetType, check_choice, check_dtype, check_images, check_int, check_logits, check_model,
                      check_number, check_positive, check_range, check_seed, evaluating, gradients_on, ordinary,
                      resolve_target, seeded_generator)
from .heatmap import to_heatmap
from .metrics.sensitivity import sensitivity
from .metrics.similarity import center_shift, spearman, topk_intersection

ATTACKS = ("topk", "targeted", "mass_center", "random")
#: How :func:`attack` and :func:`adaptive_attack` pick the returned iterate (see ``select``).
SELECTIONS = ("objective", "label")
IG_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")

#: Share of the image side taken by the default target region: 4 pixels of 224 (DANCE §4.2).
TARGET_FRACTION = 4 / 224
#: Smallest side of the default target region in pixels (the paper's 4x4 region, in absolute size).
TARGET_MIN_SIDE = 4
#: Share of the pixels in the top-k set by default: 5000 of 224 x 224 (DANCE §4.2).
TOPK_FRACTION = 5000 / (224 * 224)


# --------------------------------------------------------------------------------------------
# Differentiable explanations
# --------------------------------------------------------------------------------------------

def _leaf(inputs: torch.Tensor) -> torch.Tensor:
    # Inside an attack the inputs already carry a graph; otherwise work on a copy (an ordinary
    # tensor even under torch.inference_mode) so the caller's tensor and its .grad are never touched.
    return inputs if inputs.requires_grad else ordinary(inputs).requires_grad_(True)


def _logits(model: Callable, z: torch.Tensor) -> torch.Tensor:
    return check_logits(model(z))


def _score(model: Callable, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _logits(model, z).gather(1, target.view(-1, 1)).sum()


def _target(model: Callable, inputs: torch.Tensor, target: TargetType) -> torch.Tensor:
    with torch.no_grad():
        return resolve_target(_logits(model, inputs.detach()), target)


def _check_explained(model, inputs) -> None:
    """The checks shared by the explanations: a model, and a finite batch it can take."""
    if not callable(model):
        raise TypeError(f"model must be a torch.nn.Module (or a callable returning logits), got {type(model).__name__}")
    module = model if isinstance(model, nn.Module) else None
    check_images(inputs, module, batch_only=True, pixel_range=False)
    if module is not None:
        check_dtype(inputs, module)


def gradient(model: Callable, inputs: torch.Tensor, target: TargetType, *, create_graph: bool = False
             ) -> torch.Tensor:
    r"""Gradient of the target logit, :math:`\partial F^c / \partial x` (Simonyan et al., 2013).

    Equals Captum's ``Saliency(model).attribute(inputs, target, abs=False)``.

    Args:
        model: classifier returning logits.
        inputs: ``[B, C, H, W]``.
        target: class per image (int or ``LongTensor[B]``; None = predicted class).
        create_graph: keep the graph so the map can be differentiated with respect to the inputs.

    Returns:
        ``[B, C, H, W]`` signed map (detached unless ``create_graph``).
    """
    _check_explained(model, inputs)
    with evaluating(model), gradients_on():
        t = _target(model, inputs, target)
        x = _leaf(inputs)
        g = torch.autograd.grad(_score(model, x, t), x, create_graph=create_graph)[0]
    return g if create_graph else g.detach()


def smoothgrad(model: Callable, inputs: torch.Tensor, target: TargetType, *, n_samples: int = 10,
               stdev: float = 0.15, seed: int = 0, create_graph: bool = False) -> torch.Tensor:
    r"""SmoothGrad (Smilkov et al., 2017): the gradient averaged over ``n_samples`` noisy copies.

    The noise :math:`\mathcal{N}(0, \text{stdev}^2)` is drawn from a CPU generator seeded with
    ``seed`` (the same noise at every call, so the map is a deterministic, differentiable function
    of the input) in the layout of Captum's ``NoiseTunnel``: with equal noise it equals
    ``NoiseTunnel(Saliency(model)).attribute(inputs, nt_type="smoothgrad", nt_samples=n_samples,
    stdevs=stdev, target=target, abs=False)`` (Captum draws from the global RNG:
    ``torch.manual_seed(seed)`` before it gives the same noise).

    Args:
        model, inputs, target, create_graph: as for :func:`gradient`.
        n_samples: noisy copies per image.
        stdev: noise standard deviation in input units (Smilkov et al.: 10-20 % of the input
            range; 0.15 for [0, 1] images).
        seed: noise seed.

    Returns:
        ``[B, C, H, W]`` signed map.
    """
    _check_explained(model, inputs)
    check_int(n_samples, "n_samples")
    stdev = check_number(stdev, "stdev")
    if stdev < 0:
        raise ValueError(f"stdev must be >= 0, got {stdev}")
    g = seeded_generator(seed)
    with evaluating(model), gradients_on():
        t = _target(model, inputs, target)
        x = _leaf(inputs)
        shape = (x.shape[0] * n_samples,) + tuple(x.shape[1:])
        noise = (torch.randn(shape, generator=g) * stdev).to(device=x.device, dtype=x.dtype)
        noisy = x.repeat_interleave(n_samples, dim=0) + noise
        grad = torch.autograd.grad(_score(model, noisy, t.repeat_interleave(n_samples)), x,
                                   create_graph=create_graph)[0] / n_samples
    return grad if create_graph else grad.detach()


def _ig_rule(method: str, n_steps: int):
    """Step sizes and path positions of Captum's own rule (its approximation_parameters), so that
    the attack's Integrated Gradients equal Captum's by construction (captum pinned in requirements)."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    check_choice(method, "method", IG_METHODS)
    if method != "gausslegendre" and n_steps < 2:
        raise ValueError(f"n_steps must be at least 2 for Riemann sums, got {n_steps}")
    step_sizes, alphas = approximation_parameters(method)
    return list(step_sizes(n_steps)), list(alphas(n_steps))


def integrated_gradients(model: Callable, inputs: torch.Tensor, target: TargetType, *,
                         baseline: Union[float, torch.Tensor] = 0.0, n_steps: int = 50,
                         method: str = "riemann_trapezoid", create_graph: bool = False) -> torch.Tensor:
    r"""Integrated Gradients (Sundararajan et al., 2017) by a Riemann sum over ``n_steps`` points.

    :math:`(x - x') \odot \sum_i w_i \nabla F^c(x' + \alpha_i (x - x'))` with Captum's step sizes
    :math:`w_i` and positions :math:`\alpha_i` for ``method``, so it equals
    ``IntegratedGradients(model).attribute(inputs, baselines=baseline, target=target,
    n_steps=n_steps, method=method)``.

    Args:
        model, inputs, target, create_graph: as for :func:`gradient`.
        baseline: :math:`x'`, a float or a tensor broadcastable to ``inputs`` (default black, 0).
        n_steps: points on the path (all evaluated in one batch of ``n_steps * B`` images).
        method: ``"riemann_trapezoid"`` (default), ``"riemann_left"``, ``"riemann_right"``,
            ``"riemann_middle"`` or ``"gausslegendre"`` (Captum's default).

    Returns:
        ``[B, C, H, W]`` signed map.
    """
    _check_explained(model, inputs)
    check_int(n_steps, "n_steps")
    steps, alphas = _ig_rule(method, n_steps)
    if isinstance(baseline, torch.Tensor):
        if not baseline.is_floating_point() or not bool(torch.isfinite(baseline).all()):
            raise ValueError("baseline must be a finite float or a finite floating-point tensor")
        base_shape = tuple(baseline.shape)
    else:
        check_number(baseline, "baseline")
        base_shape = ()
    try:
        torch.broadcast_shapes(base_shape, tuple(inputs.shape))
    except RuntimeError:
        raise ValueError(f"baseline of shape {base_shape} is not broadcastable to inputs {tuple(inputs.shape)}; "
                         f"pass a float, one image [1, C, H, W] or one baseline per image [B, C, H, W]") from None
    with evaluating(model), gradients_on():
        t = _target(model, inputs, target)
        x = _leaf(inputs)
        base = torch.as_tensor(baseline).detach().to(dtype=x.dtype, device=x.device)
        base = torch.broadcast_to(base, x.shape)
        a = torch.tensor(alphas, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
        w = torch.tensor(steps, dtype=x.dtype, device=x.device).view(-1, 1, 1, 1, 1)
        path = (base + a * (x - base)).flatten(0, 1)  # step-major [n_steps * B, C, H, W]
        grads = torch.autograd.grad(_score(model, path, t.repeat(n_steps)), path, create_graph=create_graph)[0]
        avg = (grads.view((n_steps,) + tuple(x.shape)) * w).sum(dim=0)
        out = (x - base) * avg
    return out if create_graph else out.detach()


EXPLAINERS = {"gradient": gradient, "smoothgrad": smoothgrad, "integrated_gradients": integrated_gradients}


def explainer(name: str, **options) -> Callable:
    """One of :data:`EXPLAINERS` with its options fixed, e.g. ``explainer("smoothgrad", n_samples=20)``.

    The options are checked here (an unknown one is a ``TypeError`` naming the valid ones), so a
    typo such as ``n_sample=`` fails at once instead of at the first call. The sample / step count
    of the maps that are *evaluated* is what the attack directions should use too (Ghorbani et
    al. differentiate the very map they attack): pass the same ``n_samples`` / ``n_steps`` /
    ``stdev`` / ``seed`` / ``method`` as the evaluated method, e.g.
    ``explainer("integrated_gradients", n_steps=16, method="gausslegendre")`` for Captum's
    ``IntegratedGradients(...).attribute(..., n_steps=16)``.

    Returns:
        ``explain(model, inputs, target, create_graph=False) -> attributions``.
    """
    if name not in EXPLAINERS:
        raise ValueError(f"explainer name must be one of {sorted(EXPLAINERS)}, got {name!r}")
    fn = EXPLAINERS[name]
    valid = [p for p in inspect.signature(fn).parameters if p not in ("model", "inputs", "target", "create_graph")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} of explainer {name!r}; valid: {valid}")
    return functools.partial(fn, **options)


# --------------------------------------------------------------------------------------------
# Model surgery and maps
# --------------------------------------------------------------------------------------------

def softplus_copy(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """Deep copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)``.

    Softplus :math:`\\log(1 + e^{\\beta z}) / \\beta` tends to ReLU as :math:`\\beta \\to \\infty` and has
    a non-zero second derivative, so gradients of gradient maps exist. The copy keeps the
    original's train/eval mode; its parameters do not require gradients. The original is untouched.

    Args:
        model: the network.
        beta: softplus sharpness (larger = closer to ReLU).

    Returns:
        The modified copy. A ``UserWarning`` is issued when no ``nn.ReLU`` module was found
        (a network that calls ``F.relu`` functionally keeps its ReLUs).
    """
    check_model(model)
    beta = check_positive(beta, "beta")
    net = copy.deepcopy(model)
    replaced = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=float(beta)))
                replaced += 1
    if replaced == 0:
        warnings.warn("softplus_copy found no nn.ReLU module; functional ReLUs (F.relu) are not replaced, "
                      "so second derivatives of a piecewise-linear network stay zero", UserWarning, stacklevel=2)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def saliency_map(attributions: torch.Tensor) -> torch.Tensor:
    """Ghorbani et al.'s pixel map: absolute attributions summed over colour channels, ``[B, H, W]``."""
    return attributions.abs().sum(dim=1)


def map_change(attributions: torch.Tensor, perturbed_attributions: torch.Tensor, percentile: float = 95.0
               ) -> torch.Tensor:
    r""":math:`\|\Delta E\|_2` per image: the L2 distance of the [0, 1] heatmaps (:func:`dance.to_heatmap`)
    of two batches of maps ``[B, C, H, W]``.

    It is the numerator of :math:`S_S` (:func:`dance.metrics.sensitivity`), which divides it by
    :math:`\|\hat x - x\|_2`: reported next to :math:`S_S` it tells whether a lower :math:`S_S`
    comes from a smaller map change or from a larger perturbation (the random-sign control sits
    at the corners of the :math:`L_\infty` ball, with the largest :math:`L_2` norm).

    Example:
        >>> import torch
        >>> from dance.attacks import map_change
        >>> e = torch.zeros(1, 1, 2, 2); e_hat = e.clone(); e_hat[0, 0, 0, 0] = 1.0
        >>> map_change(e, e_hat).tolist()
        [1.0]
    """
    a, b = to_heatmap(attributions, percentile), to_heatmap(perturbed_attributions, percentile)
    if a.shape != b.shape:
        raise ValueError(f"attributions and perturbed_attributions must have the same shape, "
                         f"got {tuple(attributions.shape)} and {tuple(perturbed_attributions.shape)}")
    return (a - b.to(a.device)).flatten(1).norm(dim=1)


def _normalized(m: torch.Tensor) -> torch.Tensor:
    # Objectives act on the map's *distribution* of saliency, so scaling the whole map does not help.
    total = m.flatten(1).sum(dim=1).view(-1, 1, 1)
    return m / torch.where(total > 0, total, torch.ones_like(total))


def target_region(height: int, width: int, fraction: float = TARGET_FRACTION, device=None, *,
                  min_side: int = TARGET_MIN_SIDE) -> torch.Tensor:
    """Default target region: the bottom-right square whose side is ``fraction`` of the image
    side (4/224 as in the DANCE paper), at least ``min_side`` pixels (and at most the image).

    The paper's region is 4x4 pixels of a 224x224 image; the same *fraction* of a 64x64 image
    rounds to one pixel, a target too small to mean anything for a saliency map, so the side is
    never below ``min_side`` (default :data:`TARGET_MIN_SIDE` = 4, the paper's absolute size;
    before this minimum existed the default region of a 64x64 image was 1x1).
    ``min_side=1`` gives the pure fraction. Returns a ``[H, W]`` bool mask.
    """
    check_int(height, "height")
    check_int(width, "width")
    fraction = check_range(fraction, "fraction", 0.0, 1.0, closed_low=False)
    check_int(min_side, "min_side")
    rh = min(height, max(min_side, int(round(fraction * height))))
    rw = min(width, max(min_side, int(round(fraction * width))))
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[height - rh:, width - rw:] = True
    return mask


def _soft_center(m: torch.Tensor) -> torch.Tensor:
    _, h, w = m.shape
    rows = torch.arange(h, device=m.device, dtype=m.dtype).view(1, -1, 1)
    cols = torch.arange(w, device=m.device, dtype=m.dtype).view(1, 1, -1)
    return torch.stack([(m * rows).sum(dim=(1, 2)), (m * cols).sum(dim=(1, 2))], dim=1)


# --------------------------------------------------------------------------------------------
# The attack
# --------------------------------------------------------------------------------------------

@dataclass
class AttackResult:
    """What an attack returns (all tensors batched over the ``B`` images).

    Attributes:
        kind: ``"topk"``, ``"targeted"``, ``"mass_center"`` or ``"random"``.
        inputs: ``[B, C, H, W]`` the perturbed images :math:`\\hat x` (the original image where no
            valid iterate improved on it).
        original: ``[B, C, H, W]`` the clean images :math:`x`.
        labels: ``[B]`` the original model's predicted classes for :math:`x` (kept by every
            returned :math:`\\hat x`).
        target: ``[B]`` the classes explained.
        success: ``[B]`` bool: a perturbed iterate was returned (False: ``inputs == original``).
        iteration: ``[B]`` the iteration of the returned iterate (0 = the original image).
        epsilon: the :math:`L_\\infty` budget.
        k: size of the top-k sets used by the top-k attack and by :attr:`topk_intersection`.
        original_maps, perturbed_maps: ``[B, H, W]`` Ghorbani maps (abs summed over channels) of
            :math:`x` and :math:`\\hat x` on the original model.
        topk_intersection: ``[B]`` share of the original top-k pixels still in the top k (lower =
            stronger attack).
        spearman: ``[B]`` rank correlation of the two maps (lower = stronger attack).
        center_shift: ``[B]`` distance in pixels between their centres of mass (higher = stronger).
        sensitivity: ``[B]`` :math:`S_S` on the [0, 1] heatmaps (higher = stronger; NaN where
            ``inputs == original``).
        objective_before, objective_after: ``[B]`` the attack objective (on the original model's
            normalised map) at :math:`x` and at :math:`\\hat x`; NaN for the random control.
        map_change: ``[B]`` :math:`\\|\\Delta E\\|_2`, the L2 change of the [0, 1] heatmap (the
            numerator of :math:`S_S`, :func:`map_change`), so that changes of attacks and controls
            with different :math:`\\|\\hat x - x\\|_2` can be compared directly.
        extra: what a particular attack adds (the selection rule, the adaptive attack's
            surrogate objective, a control's source, ...), documented by the function that makes it.
    """

    kind: str
    inputs: torch.Tensor
    original: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor
    success: torch.Tensor
    iteration: torch.Tensor
    epsilon: float
    k: int
    original_maps: torch.Tensor
    perturbed_maps: torch.Tensor
    topk_intersection: torch.Tensor
    spearman: torch.Tensor
    center_shift: torch.Tensor
    sensitivity: torch.Tensor
    objective_before: torch.Tensor
    objective_after: torch.Tensor
    map_change: Optional[torch.Tensor] = None
    extra: dict = field(default_factory=dict)

    @property
    def linf(self) -> torch.Tensor:
        """``[B]`` :math:`\\|\\hat x - x\\|_\\infty` per image."""
        return (self.inputs - self.original).abs().flatten(1).amax(dim=1)

    @property
    def l2(self) -> torch.Tensor:
        """``[B]`` :math:`\\|\\hat x - x\\|_2` per image."""
        return (self.inputs - self.original).flatten(1).norm(dim=1)

    def measures(self) -> dict:
        """The four measures as a dict of ``[B]`` tensors."""
        return {"topk_intersection": self.topk_intersection, "spearman": self.spearman,
                "center_shift": self.center_shift, "sensitivity": self.sensitivity}


def _resolve_explain(explain) -> Callable:
    if isinstance(explain, str):
        return explainer(explain)
    if not callable(explain):
        raise TypeError("explain must be a name in dance.attacks.EXPLAINERS or a callable "
                        "explain(model, inputs, target, create_graph=False)")
    return explain


def _call(explain: Callable, model, x, t, create_graph: bool) -> torch.Tensor:
    try:
        params = inspect.signature(explain).parameters
        takes = "create_graph" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):
        takes = True
    out = explain(model, x, t, create_graph=create_graph) if takes else explain(model, x, t)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise ValueError(f"explain(model, inputs, target) must return attributions of the inputs' shape "
                         f"{tuple(x.shape)}, got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)}")
    if create_graph and not out.requires_grad:
        raise ValueError("explain(..., create_graph=True) returned a map that does not depend differentiably on "
                         "the inputs; use dance.attacks.gradient / smoothgrad / integrated_gradients or a "
                         "function built with torch.autograd.grad(..., create_graph=True)")
    return out


def _region_mask(region, batch, height, width, device) -> torch.Tensor:
    if region is None:
        return target_region(height, width, device=device)
    if isinstance(region, torch.Tensor) and region.dtype == torch.bool:
        if region.dim() not in (2, 3) or region.shape[-2:] != (height, width) or \
                (region.dim() == 3 and region.shape[0] not in (1, batch)):
            raise ValueError(f"region mask must be [H, W] or [B, H, W] with B, H, W = {batch}, {height}, {width}, "
                             f"got {tuple(region.shape)}")
        if not bool(region.any()):
            raise ValueError("region mask is empty: the targeted attack needs at least one target pixel")
        return region.detach().to(device)
    if isinstance(region, (tuple, list)) and len(region) == 4:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in region):
            raise TypeError(f"region box (x0, y0, x1, y1) must hold int pixel indices, got {tuple(region)!r}")
        x0, y0, x1, y1 = region
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"region box (x0, y0, x1, y1) = {tuple(region)} must lie inside the {width}x{height} "
                             f"image with x0 < x1, y0 < y1 (upper corner exclusive)")
        mask = torch.zeros(height, width, dtype=torch.bool, device=device)
        mask[y0:y1, x0:x1] = True
        return mask
    raise TypeError("region must be None, a bool mask [H, W] / [B, H, W], or a box (x0, y0, x1, y1)")


def attack(model: nn.Module, inputs: torch.Tensor, target: TargetType = None, *, kind: str = "topk",
           explain: Union[str, Callable] = "gradient", epsilon: float = 8 / 255,
           step_size: Optional[float] = None, iterations: int = 20, k: Optional[int] = None,
           region=None, beta: float = 10.0, seed: int = 0, select: str = "objective") -> AttackResult:
    r"""Attack the saliency maps of ``inputs`` (see the module docstring for the algorithm).

    Args:
        model: the classifier (returns logits, takes images in [0, 1]); run in eval mode (its
            train/eval flags are restored afterwards), deep-copied for the softplus directions,
            used as is for the label check and the measures; never modified.
        inputs: ``[B, C, H, W]`` images in [0, 1].
        target: class whose map is attacked; ``None`` = the predicted class.
        kind: ``"topk"``, ``"targeted"``, ``"mass_center"`` or ``"random"``.
        explain: ``"gradient"``, ``"smoothgrad"``, ``"integrated_gradients"`` (defaults of
            :func:`smoothgrad` / :func:`integrated_gradients`; use :func:`explainer` for other
            options) or a differentiable ``explain(model, inputs, target, create_graph=False)``.
        epsilon: :math:`L_\infty` budget in [0, 1] pixel units (Ghorbani et al.: 1-8 / 255).
        step_size: size of each sign step; default ``2.5 * epsilon / iterations``.
        iterations: number of steps (for the random control: number of draws tried until one
            keeps the label).
        k: top-k size; default the DANCE paper's share, 5000 / (224 * 224) of the pixels.
        region: target region of the targeted attack: a bool mask ``[H, W]`` / ``[B, H, W]`` or a box
            ``(x0, y0, x1, y1)`` (upper corner exclusive); default :func:`target_region`.
        beta: softplus sharpness of the direction model (our choice; Ghorbani et al. do not fix one).
        seed: seed of the random control's signs.
        select: which iterate is returned, per image (:data:`SELECTIONS`). ``"objective"``
            (default, Ghorbani et al.): among the iterates that keep the label, the one whose
            original-model map scores best on the attack objective; this selects on the *raw*
            map's objective, so evaluating another map (e.g. a decoy-enhanced one) on the
            returned images favours the raw map's sensitivity. ``"label"``: the last iterate that
            keeps the label, whatever its objective (no selection on any map). The rule is kept in
            ``result.extra["select"]``.

    Returns:
        :class:`AttackResult`.

    Example:
        >>> import torch
        >>> from dance.attacks import attack
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 2))
        >>> r = attack(net, torch.rand(2, 1, 8, 8), kind="topk", epsilon=0.05, iterations=3)
        >>> bool((r.linf <= 0.05 + 1e-6).all()), r.topk_intersection.shape
        (True, torch.Size([2]))
    """
    check_model(model)
    x0 = check_images(inputs, model, batch_only=True)  # finite pixels in [0, 1], the model's device
    check_dtype(x0, model)
    check_choice(kind, "kind", ATTACKS)
    check_choice(select, "select", SELECTIONS)
    epsilon = check_range(epsilon, "epsilon", 0.0, 1.0, closed_low=False)
    check_int(iterations, "iterations")
    step = 2.5 * epsilon / iterations if step_size is None else check_positive(step_size, "step_size")
    beta = check_positive(beta, "beta")
    check_seed(seed)
    fn = _resolve_explain(explain)
    b, _, height, width = x0.shape
    n_pix = height * width
    if k is None:
        k = max(1, int(round(TOPK_FRACTION * n_pix)))
    check_int(k, "k", 1, n_pix)
    region_mask = _region_mask(region, b, height, width, x0.device) if kind == "targeted" else None
    # As the rest of dance: the deployed (eval-mode) network, flags restored; autograd available
    # even under torch.no_grad() / torch.inference_mode().
    with evaluating(model), gradients_on():
        region_mask = None if region_mask is None else ordinary(region_mask)
        return _attack(model, ordinary(x0), target, kind, fn, epsilon, step, iterations, k, region_mask, beta, seed,
                       select)


def _objective(kind: str, top0, region_mask, c0) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attack objective ``[B]`` (to be maximised) of normalised maps ``p [B, H, W]``."""
    def objective(p: torch.Tensor) -> torch.Tensor:
        if kind == "topk":
            return -(p * top0).sum(dim=(1, 2))
        if kind == "targeted":
            return (p * region_mask).sum(dim=(1, 2))
        return ((_soft_center(p) - c0) ** 2).sum(dim=1).add(1e-12).sqrt()
    return objective


def _topk_set(m0: torch.Tensor, k: int) -> torch.Tensor:
    b, height, width = m0.shape
    top0 = torch.zeros(b, height * width, dtype=torch.bool, device=m0.device)
    top0.scatter_(1, torch.argsort(m0.flatten(1), dim=1, descending=True, stable=True)[:, :k], True)
    return top0.view(b, height, width)


def _result(kind, x0, best, labels, t, iteration, epsilon, k, e0, e_hat, before, after, extra) -> AttackResult:
    m0, m_hat = saliency_map(e0), saliency_map(e_hat)
    return AttackResult(
        kind=kind, inputs=best, original=x0, labels=labels, target=t, success=iteration > 0,
        iteration=iteration, epsilon=epsilon, k=k, original_maps=m0, perturbed_maps=m_hat,
        topk_intersection=topk_intersection(m0, m_hat, k), spearman=spearman(m0, m_hat),
        center_shift=center_shift(m0, m_hat), sensitivity=sensitivity(e0, e_hat, x0, best),
        objective_before=before, objective_after=after, map_change=map_change(e0, e_hat), extra=extra,
    )


def _attack(model, x0, target, kind, fn, epsilon, step, iterations, k, region_mask, beta, seed,
            select="objective") -> AttackResult:
    b = x0.shape[0]
    with torch.no_grad():
        logits = _logits(model, x0)
    labels = logits.argmax(dim=1)
    t = labels.clone() if target is None else resolve_target(logits, target)
    e0 = _call(fn, model, x0, t, False).detach()
    m0 = saliency_map(e0)
    p0 = _normalized(m0)
    objective = _objective(kind, _topk_set(m0, k), region_mask, _soft_center(p0))

    best = x0.clone()
    iteration = torch.zeros(b, dtype=torch.long, device=x0.device)
    if kind == "random":
        g = seeded_generator(seed)
        found = torch.zeros(b, dtype=torch.bool, device=x0.device)
        for it in range(1, iterations + 1):
            signs = torch.randn(x0.shape, generator=g).sign().to(device=x0.device, dtype=x0.dtype)
            cand = (x0 + epsilon * signs).clamp(0.0, 1.0)
            with torch.no_grad():
                ok = (_logits(model, cand).argmax(dim=1) == labels) & ~found
            best[ok] = cand[ok]
            iteration[ok] = it
            found |= ok
            if bool(found.all()):
                break
        before = after = torch.full((b,), float("nan"), device=x0.device)
    else:
        direction_model = softplus_copy(model, beta)
        best_obj = objective(p0).detach()
        before = best_obj.clone()
        x = x0.clone()
        for it in range(1, iterations + 1):
            xg = x.detach().requires_grad_(True)
            e = _call(fn, direction_model, xg, t, True)
            obj = objective(_normalized(saliency_map(e))).sum()
            grad = torch.autograd.grad(obj, xg)[0]
            x = x.detach() + step * grad.sign()
            x = torch.minimum(torch.maximum(x, x0 - epsilon), x0 + epsilon).clamp(0.0, 1.0)
            with torch.no_grad():
                ok = _logits(model, x).argmax(dim=1) == labels
            val = objective(_normalized(saliency_map(_call(fn, model, x, t, False).detach()))).detach()
            better = ok & (val > best_obj) if select == "objective" else ok
            best[better] = x[better]
            best_obj = torch.where(better, val, best_obj)
            iteration[better] = it
        after = best_obj

    e_hat = _call(fn, model, best, t, False).detach()
    return _result(kind, x0, best, labels, t, iteration, epsilon, k, e0, e_hat, before, after, {"select": select})


def topk_attack(model: nn.Module, inputs: torch.Tensor, target: TargetType = None, **options) -> AttackResult:
    """Top-k attack: :func:`attack` with ``kind="topk"`` (same options)."""
    return attack(model, inputs, target, kind="topk", **options)


def targeted_attack(model: nn.Module, inputs: torch.Tensor, target: TargetType = None, **options) -> AttackResult:
    """Targeted attack (saliency into ``region``, default bottom-right): :func:`attack` with ``kind="targeted"``."""
    return attack(model, inputs, target, kind="targeted", **options)


def mass_center_attack(model: nn.Module, inputs: torch.Tensor, target: TargetType = None, **options
                       ) -> AttackResult:
    """Mass-center attack: :func:`attack` with ``kind="mass_center"`` (same options)."""
    return attack(model, inputs, target, kind="mass_center", **options)


def random_sign_attack(model: nn.Module, inputs: torch.Tensor, target: TargetType = None, **options
                       ) -> AttackResult:
    """Random-sign control: :func:`attack` with ``kind="random"`` (same options)."""
    return attack(model, inputs, target, kind="random", **options)
