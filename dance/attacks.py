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
image (batched over images; ``select="label"``: the last valid iterate). Iterates that change the label are not returned, but the walk goes
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
the base method, then explain :attr:`AttackResult.inputs` with any explainer
(:func:`evaluate_enhanced` does it for decoy-enhanced maps). That is a *transfer* attack: it
ignores the defence.

**Adaptive attacks** (:func:`adaptive_attack`) aim at the decoy-enhanced map itself, with the
decoy offsets held fixed inside each step (``mode="fixed_decoy"``, BPDA-style) or averaged over
several decoy populations (``mode="eot"``); the decoys of the returned images are re-optimised
for evaluation. Differentiating through the decoy solver is not implemented (the docstring of
:func:`adaptive_attack` says why and where it would go).

**Controls.** Besides :func:`random_sign_attack` (every pixel at a corner of the ball),
:func:`norm_matched_control` reuses an attack's own perturbation with random signs or permuted
positions, so the control has exactly the attack's :math:`L_2` and :math:`L_\infty` norms;
:attr:`AttackResult.map_change` (:math:`\|\Delta E\|_2`) is reported next to :math:`S_S`.

**Selection.** ``select="objective"`` (default) returns the valid iterate that scores best on
the attacked map's objective; ``select="label"`` the last iterate that keeps the label.

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
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._checks import (TargetType, check_choice, check_dtype, check_images, check_int, check_logits, check_model,
                      check_number, check_positive, check_range, check_seed, evaluating, gradients_on, ordinary,
                      resolve_target, seeded_generator)
from .heatmap import to_heatmap
from .layers import resolve_layer
from .metrics.sensitivity import sensitivity
from .metrics.similarity import center_shift, spearman, topk_intersection

__all__ = [
    "attack", "attack_selections", "topk_attack", "targeted_attack", "mass_center_attack", "random_sign_attack", "AttackResult",
    "adaptive_attack", "evaluate_enhanced", "norm_matched_control", "map_change",
    "gradient", "smoothgrad", "integrated_gradients", "explainer", "softplus_copy", "saliency_map", "target_region",
    "ATTACKS", "SELECTIONS", "CONTROLS", "ADAPTIVE_MODES", "EXPLAINERS", "IG_METHODS",
    "TARGET_FRACTION", "TARGET_MIN_SIDE", "TOPK_FRACTION",
]

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
    """Copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)``.

    Softplus :math:`\\log(1 + e^{\\beta z}) / \\beta` tends to ReLU as :math:`\\beta \\to \\infty` and has
    a non-zero second derivative, so gradients of gradient maps exist. The copy keeps the
    original's train/eval mode. Its parameters are frozen views of the original's (the same storage,
    not copied: a VGG16 copy would be 0.5 GB per attack; they do not require gradients); its buffers
    (e.g. batch-norm statistics, which a forward pass in train mode updates) are copies. The
    original is untouched; do not change the copy's parameters in place (that changes the original's).

    Args:
        model: the network.
        beta: softplus sharpness (larger = closer to ReLU).

    Returns:
        The modified copy. A ``UserWarning`` is issued when no ``nn.ReLU`` module was found
        (a network that calls ``F.relu`` functionally keeps its ReLUs).
    """
    check_model(model)
    beta = check_positive(beta, "beta")
    # deepcopy with the parameters pre-mapped to frozen views of themselves: the modules are copied,
    # the weights are not (the attack only reads them)
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
    net = copy.deepcopy(model, memo)
    replaced = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=float(beta)))
                replaced += 1
    if replaced == 0:
        warnings.warn("softplus_copy found no nn.ReLU module; functional ReLUs (F.relu) are not replaced, "
                      "so second derivatives of a piecewise-linear network stay zero", UserWarning, stacklevel=2)
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


def _check_budget(select, epsilon, iterations, step_size, beta, seed):
    """The arguments every attack shares, checked: returns ``(epsilon, step, beta)`` (the default step
    is the usual projected-gradient 2.5 epsilon / iterations)."""
    check_choice(select, "select", SELECTIONS)
    epsilon = check_range(epsilon, "epsilon", 0.0, 1.0, closed_low=False)
    check_int(iterations, "iterations")
    step = 2.5 * epsilon / iterations if step_size is None else check_positive(step_size, "step_size")
    beta = check_positive(beta, "beta")
    check_seed(seed)
    return epsilon, step, beta


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
    return _walk(model, inputs, target, kind, explain, epsilon, step_size, iterations, k, region, beta, seed,
                 (select,))[select]


def attack_selections(model: nn.Module, inputs: torch.Tensor, target: TargetType = None, *, kind: str = "topk",
                      explain: Union[str, Callable] = "gradient", epsilon: float = 8 / 255,
                      step_size: Optional[float] = None, iterations: int = 20, k: Optional[int] = None,
                      region=None, beta: float = 10.0, seed: int = 0,
                      selects: Sequence[str] = SELECTIONS) -> Dict[str, AttackResult]:
    r""":func:`attack` once, returned under several selection rules: ``{rule: AttackResult}``.

    The walk (directions, steps, projection, label checks) does not depend on ``select``; only
    which valid iterate is returned does. So one walk serves every rule of ``selects`` (default
    :data:`SELECTIONS`: the raw map's best objective, and the last iterate that keeps the label),
    and ``attack_selections(...)[rule]`` equals ``attack(..., select=rule)`` at the cost of one
    attack. The other arguments are :func:`attack`'s.

    Example:
        >>> import torch
        >>> from dance.attacks import attack_selections
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 2))
        >>> r = attack_selections(net, torch.rand(2, 1, 8, 8), epsilon=0.05, iterations=3)
        >>> sorted(r), r["label"].extra["select"]
        (['label', 'objective'], 'label')
    """
    if isinstance(selects, str) or not isinstance(selects, (list, tuple)) or not selects:
        raise TypeError(f"selects must be a non-empty list or tuple of rules from {SELECTIONS}, got {selects!r}")
    rules = tuple(dict.fromkeys(selects))
    for rule in rules:
        check_choice(rule, "selects", SELECTIONS)
    return _walk(model, inputs, target, kind, explain, epsilon, step_size, iterations, k, region, beta, seed, rules)


def _walk(model, inputs, target, kind, explain, epsilon, step_size, iterations, k, region, beta, seed, selects):
    """The checks of :func:`attack`, then one walk (:func:`_attack`) for every rule of ``selects``."""
    check_model(model)
    x0 = check_images(inputs, model, batch_only=True)  # finite pixels in [0, 1], the model's device
    check_dtype(x0, model)
    check_choice(kind, "kind", ATTACKS)
    epsilon, step, beta = _check_budget(selects[0], epsilon, iterations, step_size, beta, seed)
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
                       selects)


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
            selects: Tuple[str, ...]) -> Dict[str, AttackResult]:
    """One walk; ``{rule: AttackResult}`` for every selection rule in ``selects`` (the walk does not
    depend on the rule, only which of its iterates is returned)."""
    b = x0.shape[0]
    with torch.no_grad():
        logits = _logits(model, x0)
    labels = logits.argmax(dim=1)
    t = labels.clone() if target is None else resolve_target(logits, target)
    e0 = _call(fn, model, x0, t, False).detach()
    m0 = saliency_map(e0)
    p0 = _normalized(m0)
    objective = _objective(kind, _topk_set(m0, k), region_mask, _soft_center(p0))

    best = {rule: x0.clone() for rule in selects}
    iteration = {rule: torch.zeros(b, dtype=torch.long, device=x0.device) for rule in selects}
    if kind == "random":
        g = seeded_generator(seed)
        found = torch.zeros(b, dtype=torch.bool, device=x0.device)
        for it in range(1, iterations + 1):
            signs = torch.randn(x0.shape, generator=g).sign().to(device=x0.device, dtype=x0.dtype)
            cand = (x0 + epsilon * signs).clamp(0.0, 1.0)
            with torch.no_grad():
                ok = (_logits(model, cand).argmax(dim=1) == labels) & ~found
            for rule in selects:  # one draw per image: every rule returns it
                best[rule][ok] = cand[ok]
                iteration[rule][ok] = it
            found |= ok
            if bool(found.all()):
                break
        before = torch.full((b,), float("nan"), device=x0.device)
        after = {rule: before for rule in selects}
    else:
        direction_model = softplus_copy(model, beta)
        before = objective(p0).detach()
        best_obj = {rule: before.clone() for rule in selects}
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
            for rule in selects:
                better = ok & (val > best_obj[rule]) if rule == "objective" else ok
                best[rule][better] = x[better]
                best_obj[rule] = torch.where(better, val, best_obj[rule])
                iteration[rule][better] = it
        after = best_obj

    out = {}
    for rule in selects:
        e_hat = _call(fn, model, best[rule], t, False).detach()
        extra = {"select": rule} if region_mask is None else {"select": rule, "region": region_mask}
        out[rule] = _result(kind, x0, best[rule], labels, t, iteration[rule], epsilon, k, e0, e_hat, before,
                            after[rule], extra)
    return out


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


# --------------------------------------------------------------------------------------------
# Norm-matched controls
# --------------------------------------------------------------------------------------------

#: The norm-matched controls of :func:`norm_matched_control`.
CONTROLS = ("sign", "permute_channel", "permute_all")


def norm_matched_control(model: nn.Module, result: AttackResult, *, control: str = "sign",
                         explain: Union[str, Callable] = "gradient", seed: int = 0, tries: int = 20) -> AttackResult:
    r"""A control with exactly the attack's own perturbation size, not aimed at the map.

    :func:`random_sign_attack` puts every pixel at a corner of the :math:`L_\infty` ball, the
    largest :math:`L_2` norm the budget allows, so its :math:`S_S` (a ratio over
    :math:`\|\hat x - x\|_2`) is not comparable with an attack's. These controls reuse the
    attack's own :math:`\delta = \hat x - x` (``result.inputs - result.original``):

    * ``"sign"``: each entry keeps its magnitude :math:`|\delta_i|` and gets a random sign
      (a fair coin) wherever both signs keep the pixel in [0, 1]; elsewhere it keeps the attack's
      sign, the only one that does;
    * ``"permute_channel"``: the entries of each colour channel are moved to a random
      permutation of that channel's pixel positions (signs travel with them);
    * ``"permute_all"``: the same over all ``C * H * W`` entries of the image, channels mixed.

    A permuted entry that would leave [0, 1] at its new position takes the opposite sign, which
    stays inside whenever :math:`|\delta_i| \le 1/2` (always for budgets :math:`\epsilon \le 1/2`;
    beyond that the pixel is clipped and ``extra["clipped"]`` counts it). So the control's
    per-image multiset of :math:`|\delta_i|`, hence its :math:`L_2` and :math:`L_\infty` norms,
    equal the attack's (up to float rounding of :math:`x + \delta'`), and it stays in the
    :math:`\epsilon`-ball and in [0, 1].

    Label check as for the random control: up to ``tries`` draws per image, the first that keeps
    the original model's label is returned (``success``; otherwise the clean image). Images the
    attack left unperturbed stay unperturbed (``success`` False).

    Args:
        model: the classifier the attack was run on (never modified).
        result: the attack's :class:`AttackResult`.
        control: one of :data:`CONTROLS`.
        explain: the explanation whose maps are measured (as for :func:`attack`; use the one the
            attack aimed at).
        seed: seed of the signs / permutations (CPU generator).
        tries: draws per image until one keeps the label.

    Returns:
        :class:`AttackResult` with ``kind = "matched_" + control``, the measures of the base
        explanation, ``map_change``, NaN objectives, and ``extra`` with ``control``,
        ``source_kind`` (the attack's kind), ``flipped`` (entries whose sign was forced by
        [0, 1], per image) and ``clipped``.
    """
    check_model(model)
    if not isinstance(result, AttackResult):
        raise TypeError(f"result must be a dance.attacks.AttackResult (what attack() returns), got {type(result).__name__}")
    check_choice(control, "control", CONTROLS)
    check_seed(seed)
    check_int(tries, "tries")
    fn = _resolve_explain(explain)
    with evaluating(model), gradients_on():
        x0 = ordinary(result.original)
        xa = ordinary(result.inputs)
        if xa.shape != x0.shape or xa.shape[0] != result.labels.shape[0]:
            raise ValueError("result.inputs and result.original must have the same shape [B, C, H, W]")
        t = ordinary(result.target)
        labels = ordinary(result.labels)
        delta = xa - x0
        moved = delta.flatten(1).abs().amax(dim=1) > 0
        b, c, h, w = x0.shape
        g = seeded_generator(seed)
        best = x0.clone()
        iteration = torch.zeros(b, dtype=torch.long, device=x0.device)
        flipped = torch.zeros(b, dtype=torch.long, device=x0.device)
        clipped = torch.zeros(b, dtype=torch.long, device=x0.device)
        found = ~moved
        for it in range(1, tries + 1):
            if control == "sign":
                coin = (torch.rand(x0.shape, generator=g) < 0.5).to(x0.device)
                flip_ok = ((x0 - delta) >= 0) & ((x0 - delta) <= 1)
                cand_delta = torch.where(coin & flip_ok, -delta, delta)
                forced = (coin & ~flip_ok).flatten(1).sum(dim=1)
            else:
                rows = b * c if control == "permute_channel" else b
                flat = delta.reshape(rows, -1)
                perm = torch.argsort(torch.rand(flat.shape, generator=g), dim=1).to(x0.device)
                cand_delta = flat.gather(1, perm).view_as(delta)
                outside = ((x0 + cand_delta) < 0) | ((x0 + cand_delta) > 1)
                cand_delta = torch.where(outside, -cand_delta, cand_delta)
                forced = outside.flatten(1).sum(dim=1)
            cand = x0 + cand_delta
            clip = ((cand < 0) | (cand > 1)).flatten(1).sum(dim=1)
            cand = cand.clamp(0.0, 1.0)
            with torch.no_grad():
                ok = (_logits(model, cand).argmax(dim=1) == labels) & ~found
            best[ok] = cand[ok]
            iteration[ok] = it
            flipped[ok] = forced[ok]
            clipped[ok] = clip[ok]
            found |= ok
            if bool(found.all()):
                break
        e0 = _call(fn, model, x0, t, False).detach()
        e_hat = _call(fn, model, best, t, False).detach()
        nan = torch.full((b,), float("nan"), device=x0.device)
        return _result(f"matched_{control}", x0, best, labels, t, iteration, result.epsilon, result.k, e0, e_hat,
                       nan, nan.clone(), {"control": control, "source_kind": result.kind, "flipped": flipped,
                                          "clipped": clipped})


# --------------------------------------------------------------------------------------------
# Adaptive attacks on decoy-enhanced maps
# --------------------------------------------------------------------------------------------

#: The adaptive attacks of :func:`adaptive_attack`.
ADAPTIVE_MODES = ("fixed_decoy", "eot", "unrolled")


def _decoy_setup(model, layer, epsilon_decoy, decoy_options, aggregate):
    """The checked decoy layer name, :class:`dance.DecoyConfig` and explicit masks (or None)."""
    from .decoys import DecoyConfig
    from .enhanced import AGGREGATES

    epsilon_decoy = check_positive(epsilon_decoy, "epsilon_decoy")
    check_choice(aggregate, "aggregate", AGGREGATES)
    if decoy_options is None:
        decoy_options = {}
    if not isinstance(decoy_options, dict):
        raise TypeError(f"decoy_options must be a dict of dance.DecoyConfig keywords (relative, patch_size, solver, ...), "
                        f"got {type(decoy_options).__name__}")
    options = dict(decoy_options)
    masks = options.pop("masks", None)
    valid = sorted(set(DecoyConfig.__dataclass_fields__) - {"epsilon"})
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"unknown decoy option(s) {unknown}; valid: {valid + ['masks']} (the tolerance is epsilon_decoy)")
    options.setdefault("progress", False)
    config = DecoyConfig(epsilon=epsilon_decoy, **options)
    name = resolve_layer(model, layer)[0]
    return name, config, masks


def _population_offsets(model, x, name, config, masks, given=None) -> list:
    """Per image, the decoy offsets ``x~_j - x`` ``[N_b, C, H, W]`` of the decoys optimised at ``x``
    (or of ``given``, the caller's decoys of ``x``, checked to belong to ``x`` and the layer)."""
    from .decoys import generate_decoys_batch

    decoys = generate_decoys_batch(model, x.detach(), name, config, masks=masks) if given is None else given
    return [(d.images.to(x.device, x.dtype) - x[i:i + 1].detach()) for i, d in enumerate(decoys)], decoys


def _check_clean_decoys(clean_decoys, x0: torch.Tensor, name: str):
    """``clean_decoys`` as a list of :class:`dance.Decoys`, one per image of ``x0``, made at ``name``."""
    from .decoys import Decoys

    if clean_decoys is None:
        return None
    if isinstance(clean_decoys, Decoys):
        clean_decoys = [clean_decoys]
    if not isinstance(clean_decoys, (list, tuple)) or not all(isinstance(d, Decoys) for d in clean_decoys):
        raise TypeError("clean_decoys must be a list of dance.Decoys, one per image (as dance.generate_decoys_batch "
                        f"returns them), got {type(clean_decoys).__name__}")
    if len(clean_decoys) != x0.shape[0]:
        raise ValueError(f"clean_decoys has {len(clean_decoys)} entries for {x0.shape[0]} images; pass one "
                         f"dance.Decoys per image")
    for i, d in enumerate(clean_decoys):
        if d.layer != name:
            raise ValueError(f"clean_decoys[{i}] was made at layer {d.layer!r}, not at layer={name!r}; pass the "
                             f"decoys of that layer or leave clean_decoys=None")
        if tuple(d.original.shape[1:]) != tuple(x0.shape[1:]) or not torch.equal(
                d.original.to(x0.device, x0.dtype).reshape(x0[i].shape), x0[i]):
            raise ValueError(f"clean_decoys[{i}] belongs to another image (its .original differs from image {i}); "
                             f"pass the decoys of these clean images, in their order, or leave clean_decoys=None")
    return list(clean_decoys)


def _enhanced_of(fn, net, z, t, offsets, how: str, create_graph: bool) -> torch.Tensor:
    """Decoy-enhanced maps ``[B, C, H, W]`` of ``z`` over the populations ``{z} u {clamp(z + o_j)}``."""
    return _enhanced_over(fn, net, z, t, [(z[i:i + 1] + o).clamp(0.0, 1.0) for i, o in enumerate(offsets)], how,
                          create_graph)


def _enhanced_over(fn, net, z, t, decoys, how: str, create_graph: bool) -> torch.Tensor:
    """Decoy-enhanced maps ``[B, C, H, W]`` of ``z`` over the populations ``{z} u decoys[i]``."""
    from .enhanced import aggregate_maps

    rows = torch.cat([torch.cat([z[i:i + 1], d]) for i, d in enumerate(decoys)])
    sizes = [1 + d.shape[0] for d in decoys]
    row_t = torch.cat([t[i:i + 1].expand(n) for i, n in enumerate(sizes)])
    e = _call(fn, net, rows, row_t, create_graph)
    return torch.stack([aggregate_maps(m, how) for m in e.split(sizes)])


def _eot_populations(config, masks, model, x, name, eot_samples, eot_shifts, seed):
    """The EOT populations: ``(config, masks)`` pairs, the defender's own first."""
    from dataclasses import replace

    from .layers import LayerProbe
    from .masks import default_masks

    p = config.patch_size
    if eot_shifts is None:
        others = [(dy, dx) for dy in range(p) for dx in range(p) if (dy, dx) != (0, 0)]
        if eot_samples - 1 > len(others):
            raise ValueError(f"eot_samples={eot_samples} is more than the {len(others) + 1} distinct mask offsets of "
                             f"patch_size={p}; pass eot_shifts= explicitly or fewer eot_samples")
        g = seeded_generator(seed)
        pick = torch.randperm(len(others), generator=g)[:eot_samples - 1].tolist()
        shifts = [(0, 0)] + [others[i] for i in pick]
    else:
        if not isinstance(eot_shifts, (list, tuple)) or not eot_shifts or not all(
                isinstance(sh, (list, tuple)) and len(sh) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                       for v in sh) for sh in eot_shifts):
            raise TypeError(f"eot_shifts must be a non-empty list of (dy, dx) int pairs, got {eot_shifts!r}")
        shifts = [tuple(sh) for sh in eot_shifts]
    family = masks
    if family is None and any(sh != (0, 0) for sh in shifts):
        module = resolve_layer(model, name)[1]
        family = default_masks(LayerProbe(model, module, name), x[:1].detach(), config.patch_size, config.stride,
                               config.spacing)
    pops = []
    for i, (dy, dx) in enumerate(shifts):
        cfg = replace(config, seed=config.seed + i)
        if (dy, dx) == (0, 0):
            pops.append((cfg, masks))
        else:
            pops.append((cfg, torch.as_tensor(family).roll(shifts=(dy, dx), dims=(-2, -1))))
    return shifts, pops


def adaptive_attack(model: nn.Module, inputs: torch.Tensor, target: TargetType = None, *, layer,
                    epsilon_decoy: float, kind: str = "topk", explain: Union[str, Callable] = "gradient",
                    mode: str = "fixed_decoy", epsilon: float = 8 / 255, step_size: Optional[float] = None,
                    iterations: int = 20, k: Optional[int] = None, region=None, beta: float = 10.0, seed: int = 0,
                    select: str = "objective", refresh_every: Optional[int] = None, eot_samples: int = 4,
                    eot_shifts=None, decoy_options: Optional[dict] = None, aggregate: str = "range",
                    clean_decoys=None, unroll_steps: int = 5) -> AttackResult:
    r"""Attack the *decoy-enhanced* map of ``inputs`` (DANCE), knowing the defence.

    The transfer attacks (:func:`attack`) aim at the raw map of the base explanation and are then
    evaluated on DANCE maps; an adversary who knows the defence aims at the decoy-enhanced map
    itself. Same budget, steps, label check and iterate selection as :func:`attack`; only the
    objective differs.

    **The map attacked.** For the current iterate :math:`z = x + \delta` the population is
    :math:`\{z\} \cup \{\operatorname{clip}_{[0,1]}(z + o_j)\}` with decoy offsets
    :math:`o_j = \tilde x_j - x`, and the map is the pixelwise ``aggregate`` (the paper's range,
    max - min) of the base explanation over it, which is differentiable almost everywhere in
    :math:`z`. The decoys themselves come out of an optimisation (:func:`dance.generate_decoys`);
    its dependence on :math:`z` is not differentiated (BPDA, Athalye et al. 2018): the offsets are
    held fixed within each step.

    * ``mode="fixed_decoy"``: the offsets of the decoys optimised on the clean image (with
      ``refresh_every=K``: re-optimised at the current iterate every ``K`` steps);
    * ``mode="eot"``: the objective is averaged over ``eot_samples`` decoy populations (expectation
      over transformations): the defender's own, and populations whose mask family is shifted by
      ``(dy, dx)`` pixels (``torch.roll``, so the masks still cover every pixel; drawn without
      replacement from the ``patch_size**2 - 1`` non-zero offsets, seeded by ``seed``, or given as
      ``eot_shifts``), each with decoy seed ``seed + i`` (which matters with ``n_masks``).
    * ``mode="unrolled"`` (through the solver): inside every step the decoys of the current
      iterate are *regenerated* by ``unroll_steps`` differentiable Adam steps of the paper's
      penalty (:func:`dance.decoys.unrolled_decoys`, ``create_graph=True``), warm-started from the
      defender's decoys of the clean image (their offsets moved to :math:`z`; with
      ``refresh_every``: from decoys re-optimised at the iterate), against :math:`F_l(z)`, with
      the masks, signs, epsilon and Adam settings (``c``, ``tau``, ``tau_decay``, ``lr``) of those
      decoys and of ``decoy_options``; the attack gradient flows through the start point,
      :math:`F_l(z)`, the mask composition and every unrolled step to :math:`z`. What is not
      differentiated, because it is not differentiable (see :func:`dance.decoys.unrolled_decoys`):
      the full solver's length (up to ``steps * (1 + max_doublings)`` steps per decoy), its
      comparison-based return rule (the best feasible iterate) and its ``c`` doubling, early
      freezing and dropping of infeasible decoys; the unrolled decoys are the last iterate and may
      lie over epsilon. Needs the Adam solver (``decoy_options`` ``solver`` ``"adam"`` or a
      :class:`dance.Adam`). Evaluation, as for the other modes, re-optimises the decoys of the
      returned images with the full solver.

    Directions are computed on :func:`softplus_copy` (second derivatives of ReLU maps vanish);
    the label check and the per-iterate selection (``select="objective"``: the surrogate
    objective, the fixed-offset map of the *original* model, averaged over the EOT populations,
    or with ``mode="unrolled"`` the map over its unrolled decoys, made with the original model;
    ``"label"``: the last iterate that keeps the label) use the original model. For evaluation the
    decoys of the returned images are **re-optimised** from scratch (the defender's population,
    ``decoy_options``), and every measure, ``objective_after`` included, is computed on the
    decoy-enhanced maps of the original model: clean image with its decoys vs returned image with
    its new decoys. The attack objective (top-k set, centre of mass) is that of the clean
    decoy-enhanced map.

    **Through the full solver** (not implemented): differentiating the optimised decoys
    :math:`o_j(z)` themselves. Unrolling the paper's Adam solver to its end means back-propagating
    second-order explanation graphs through up to ``steps * (1 + max_doublings)`` (200-1000)
    penalised steps per decoy, whose discrete decisions (feasibility, ``tau`` shrinking, early
    freezing, ``c`` doubling, the best feasible iterate returned) make the unrolled map piecewise
    with no useful derivative at the switches, at a memory cost of the population times the steps;
    ``mode="unrolled"`` differentiates a few warm-started steps instead. For the line-search
    solver (:class:`dance.LineSearch`) there is a closed-form route, not implemented: each
    patch's decoy is :math:`\operatorname{clip}(z + \alpha s)` on the patch with :math:`\alpha`
    the root of :math:`\max|F_l(z + \alpha s M) - F_l(z)| = \epsilon`, so
    :math:`\partial\alpha/\partial z` follows from the implicit function theorem at the active
    footprint cell, one extra layer gradient per patch. It would replace the fixed offsets of
    this function's population by offsets :math:`\alpha(z) s M` that carry that gradient (the
    line-search root search in :mod:`dance.decoys` would have to return each patch's
    :math:`\alpha` and active cell, which it does not today).

    Args:
        model: the classifier (never modified; eval mode during the call, flags restored).
        inputs: ``[B, C, H, W]`` images in [0, 1].
        target: class whose map is attacked; ``None`` = the predicted class.
        layer: the decoy layer (name in ``model.named_modules()`` or the module).
        epsilon_decoy: the decoy tolerance at ``layer`` (``decoy_options={"relative": True}``
            makes it a fraction of ``max|F_l(x)|``).
        kind: ``"topk"``, ``"targeted"`` or ``"mass_center"``.
        explain: the base explanation, as for :func:`attack`.
        mode: one of :data:`ADAPTIVE_MODES`.
        epsilon, step_size, iterations, k, region, beta, seed, select: as for :func:`attack`.
        refresh_every: re-optimise the decoy offsets at the current iterate every this many steps
            (default ``None``: the clean image's offsets throughout).
        eot_samples: populations averaged by ``mode="eot"`` (default 4, the defender's included).
        eot_shifts: explicit mask offsets ``[(dy, dx), ...]`` for ``mode="eot"`` (overrides
            ``eot_samples``; ``(0, 0)`` is the defender's family).
        decoy_options: keywords of :class:`dance.DecoyConfig` other than ``epsilon`` (``relative``,
            ``patch_size``, ``solver``, ...) and ``masks``; ``progress`` defaults to False here.
        aggregate: ``"range"`` (the paper), ``"mean"`` or ``"std"``.
        clean_decoys: the defender's decoys of the clean images (one :class:`dance.Decoys` per
            image, made at ``layer``, e.g. by :func:`dance.generate_decoys_batch` with the same
            options), to reuse instead of optimising them again; default None: optimised here.
        unroll_steps: the differentiable Adam steps of ``mode="unrolled"`` per attack step
            (default 5; ignored by the other modes).

    Returns:
        :class:`AttackResult` (``kind`` as passed) whose maps and measures are decoy-enhanced;
        ``extra`` holds ``mode``, ``select``, ``unroll_steps`` (``mode="unrolled"``; else None),
        ``surrogate_objective`` (``[B]``, the selected
        iterate's surrogate objective), ``shifts`` (the EOT offsets), ``decoys`` (the re-optimised
        :class:`dance.Decoys` of the returned images), ``clean_decoys`` and ``region``.

    Example:
        >>> import torch
        >>> from dance.attacks import adaptive_attack
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 2))
        >>> r = adaptive_attack(net, torch.rand(2, 1, 8, 8), layer="1", epsilon_decoy=0.1,
        ...                     decoy_options={"relative": True, "solver": "linesearch"},
        ...                     epsilon=0.05, iterations=2)
        >>> bool((r.linf <= 0.05 + 1e-6).all()), r.objective_after.shape
        (True, torch.Size([2]))
    """
    check_model(model)
    x0 = check_images(inputs, model, batch_only=True)
    check_dtype(x0, model)
    if kind == "random":
        raise ValueError("kind='random' is a control, not an attack on the map; use random_sign_attack or "
                         "norm_matched_control")
    check_choice(kind, "kind", tuple(a for a in ATTACKS if a != "random"))
    check_choice(mode, "mode", ADAPTIVE_MODES)
    epsilon, step, beta = _check_budget(select, epsilon, iterations, step_size, beta, seed)
    if refresh_every is not None:
        check_int(refresh_every, "refresh_every")
    check_int(eot_samples, "eot_samples")
    check_int(unroll_steps, "unroll_steps")
    fn = _resolve_explain(explain)
    name, config, masks = _decoy_setup(model, layer, epsilon_decoy, decoy_options, aggregate)
    if mode == "unrolled":
        from .decoys import Adam

        if not isinstance(config.solver, Adam):
            raise ValueError("mode='unrolled' unrolls the paper's Adam solver, but decoy_options has solver="
                             f"{config.solver!r}; pass decoy_options={{'solver': 'adam', ...}} (or a dance.Adam)")
    b, _, height, width = x0.shape
    n_pix = height * width
    if k is None:
        k = max(1, int(round(TOPK_FRACTION * n_pix)))
    check_int(k, "k", 1, n_pix)
    region_mask = _region_mask(region, b, height, width, x0.device) if kind == "targeted" else None
    with evaluating(model), gradients_on():
        x0 = ordinary(x0)
        region_mask = None if region_mask is None else ordinary(region_mask)
        if mode == "eot":
            shifts, pops = _eot_populations(config, masks, model, x0, name, eot_samples, eot_shifts, seed)
        else:
            shifts, pops = [(0, 0)], [(config, masks)]
        given = _check_clean_decoys(clean_decoys, x0, name)
        return _adaptive(model, x0, target, kind, fn, epsilon, step, iterations, k, region_mask, beta, select,
                         refresh_every, name, config, masks, pops, shifts, mode, aggregate, given,
                         unroll_steps if mode == "unrolled" else None)


def _adaptive(model, x0, target, kind, fn, epsilon, step, iterations, k, region_mask, beta, select, refresh_every,
              name, config, masks, pops, shifts, mode, aggregate, given=None, unroll_steps=None) -> AttackResult:
    from .decoys import unrolled_decoys

    b = x0.shape[0]
    with torch.no_grad():
        logits = _logits(model, x0)
    labels = logits.argmax(dim=1)
    t = labels.clone() if target is None else resolve_target(logits, target)
    # The defender's clean decoy-enhanced map fixes the objective (top-k set, centre of mass).
    # The defender's own population comes first; the caller may hand it in (``given``).
    offsets = [_population_offsets(model, x0, name, cfg, m, given if i == 0 else None) for i, (cfg, m) in enumerate(pops)]
    clean_decoys = offsets[0][1]
    offsets = [o for o, _ in offsets]
    e0 = _enhanced_of(fn, model, x0, t, offsets[0], aggregate, False).detach()
    m0 = saliency_map(e0)
    objective = _objective(kind, _topk_set(m0, k), region_mask, _soft_center(_normalized(m0)))
    before = objective(_normalized(m0)).detach()

    # mode="unrolled": the warm start of the unrolled solver (the clean decoys, or refreshed ones).
    warm = clean_decoys

    def surrogate(net, z, create_graph):  # [B], averaged over the populations
        if unroll_steps is not None:
            pop = [unrolled_decoys(net, z[i:i + 1], d, unroll_steps, solver=config.solver, create_graph=create_graph)
                   for i, d in enumerate(warm)]
            return objective(_normalized(saliency_map(_enhanced_over(fn, net, z, t, pop, aggregate, create_graph))))
        vals = [objective(_normalized(saliency_map(_enhanced_of(fn, net, z, t, o, aggregate, create_graph))))
                for o in offsets]
        return torch.stack(vals).mean(dim=0)

    direction_model = softplus_copy(model, beta)
    best = x0.clone()
    with torch.no_grad():
        best_obj = surrogate(model, x0, False).detach()
    iteration = torch.zeros(b, dtype=torch.long, device=x0.device)
    x = x0.clone()
    for it in range(1, iterations + 1):
        if refresh_every is not None and it > 1 and (it - 1) % refresh_every == 0:
            fresh = [_population_offsets(model, x, name, cfg, m) for cfg, m in pops]
            offsets, warm = [o for o, _ in fresh], fresh[0][1]
        xg = x.detach().requires_grad_(True)
        grad = torch.autograd.grad(surrogate(direction_model, xg, True).sum(), xg)[0]
        x = x.detach() + step * grad.sign()
        x = torch.minimum(torch.maximum(x, x0 - epsilon), x0 + epsilon).clamp(0.0, 1.0)
        with torch.no_grad():
            ok = _logits(model, x).argmax(dim=1) == labels
        val = surrogate(model, x, False).detach()
        better = ok & (val > best_obj) if select == "objective" else ok
        best[better] = x[better]
        best_obj = torch.where(better, val, best_obj)
        iteration[better] = it

    # Evaluation: the defender re-optimises the decoys of the returned images.
    new_offsets, decoys = _population_offsets(model, best, name, config, masks)
    e_hat = _enhanced_of(fn, model, best, t, new_offsets, aggregate, False).detach()
    after = objective(_normalized(saliency_map(e_hat))).detach()
    extra = {"mode": mode, "select": select, "unroll_steps": unroll_steps, "surrogate_objective": best_obj,
             "shifts": shifts, "decoys": decoys, "clean_decoys": clean_decoys, "region": region_mask}
    return _result(kind, x0, best, labels, t, iteration, epsilon, k, e0, e_hat, before, after, extra)


def evaluate_enhanced(model: nn.Module, result: AttackResult, *, layer, epsilon_decoy: float,
                      explain: Union[str, Callable] = "gradient", region=None, decoy_options: Optional[dict] = None,
                      aggregate: str = "range", clean_decoys=None) -> AttackResult:
    r"""Measure an attack's images on decoy-enhanced maps, as :func:`adaptive_attack` measures its own.

    For a transfer attack (:func:`attack`, aimed at the raw map) or a control: the decoys of the
    clean images (``result.original``) and of the attacked ones (``result.inputs``) are optimised
    with the same ``decoy_options``, and the measures, ``objective_before`` and
    ``objective_after`` (the attack objective of ``result.kind`` on the clean decoy-enhanced map's
    top-k set / centre of mass / ``region``) are computed on the decoy-enhanced maps of the
    original model. So ``evaluate_enhanced(model, attack(...), ...).objective_after`` and
    ``adaptive_attack(...).objective_after`` are the same quantity.

    Args:
        model: the classifier.
        result: an :class:`AttackResult`.
        layer, epsilon_decoy, explain, decoy_options, aggregate: as for :func:`adaptive_attack`
            (``explain``: the base explanation whose DANCE map is measured).
        region: target region of a targeted attack; default the region the attack used
            (``result.extra["region"]``), else :func:`target_region`.
        clean_decoys: the decoys of ``result.original`` (one :class:`dance.Decoys` per image, made
            at ``layer`` with the same options) to reuse, e.g. when several attacks of the same
            images are evaluated; default None: optimised here.

    Returns:
        :class:`AttackResult`: ``inputs``, ``success``, ``iteration`` of ``result``; maps and
        measures of the decoy-enhanced maps; objectives NaN for controls; ``extra`` with
        ``decoys``, ``clean_decoys``, ``source_kind``.
    """
    check_model(model)
    if not isinstance(result, AttackResult):
        raise TypeError(f"result must be a dance.attacks.AttackResult, got {type(result).__name__}")
    fn = _resolve_explain(explain)
    name, config, masks = _decoy_setup(model, layer, epsilon_decoy, decoy_options, aggregate)
    with evaluating(model), gradients_on():
        x0, xh, t = ordinary(result.original), ordinary(result.inputs), ordinary(result.target)
        b, _, height, width = x0.shape
        given = _check_clean_decoys(clean_decoys, x0, name)
        offsets0, clean_decoys = _population_offsets(model, x0, name, config, masks, given)
        offsets1, decoys = _population_offsets(model, xh, name, config, masks)
        e0 = _enhanced_of(fn, model, x0, t, offsets0, aggregate, False).detach()
        e_hat = _enhanced_of(fn, model, xh, t, offsets1, aggregate, False).detach()
        m0 = saliency_map(e0)
        if result.kind in ATTACKS and result.kind != "random":
            if result.kind == "targeted":
                stored = result.extra.get("region") if region is None else None
                region_mask = stored if stored is not None else _region_mask(region, b, height, width, x0.device)
            else:
                region_mask = None
            objective = _objective(result.kind, _topk_set(m0, result.k), region_mask, _soft_center(_normalized(m0)))
            before = objective(_normalized(m0)).detach()
            after = objective(_normalized(saliency_map(e_hat))).detach()
        else:
            before = torch.full((b,), float("nan"), device=x0.device)
            after = before.clone()
        return _result(result.kind, x0, xh, ordinary(result.labels), t, result.iteration.clone(), result.epsilon,
                       result.k, e0, e_hat, before, after,
                       {"decoys": decoys, "clean_decoys": clean_decoys, "source_kind": result.kind})
