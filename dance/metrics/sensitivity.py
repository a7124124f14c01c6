r"""How much does an explanation move when the input moves?

* :func:`sensitivity` is the DANCE paper's :math:`S_S` (§4.2, after Alvarez-Melis & Jaakkola,
  2018) for one given pair of inputs, typically an image and its attacked version.
* :func:`max_sensitivity` and :func:`avg_sensitivity` are Yeh et al.'s (2019, §2, Definitions 2.1
  and 2.2) Monte Carlo estimates over an :math:`L_\infty` ball of radius ``r`` around the input.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .._checks import (TargetType, as_target, check_batch, check_choice, check_int, check_interval, check_maps,
                       check_positive, model_of, resolve_target, seeded_generator)
from ._registry import metric
from ._utils import call_explain, forward, heatmaps

NORMALIZATIONS = ("unit", "relative", None)


@metric("lower", "DANCE paper §4.2, after Alvarez-Melis & Jaakkola (2018)", "alvarez2018robustness",
        "E = heatmaps in [0, 1] (§4.1); x_hat = the input under the attacks of §4.2; L2 norms")
def sensitivity(attributions: torch.Tensor, perturbed_attributions: torch.Tensor, inputs: torch.Tensor,
                perturbed: torch.Tensor, *, heatmap: bool = True, percentile: float = 95.0) -> torch.Tensor:
    r"""Sensitivity :math:`S_S = \|E(x) - E(\hat x)\|_2 / \|x - \hat x\|_2` per image.

    Args:
        attributions: ``E(x)``: ``[B, C, H, W]`` maps of ``inputs`` (or ``[B, H, W]`` heatmaps).
        perturbed_attributions: ``E(x_hat)``, the same method's maps of ``perturbed``, same shape.
        inputs: ``x``, ``[B, C, H, W]``.
        perturbed: ``x_hat``, same shape as ``inputs``.
        heatmap: if True (the paper's setting), ``[B, C, H, W]`` maps are first turned into
            [0, 1] heatmaps with :func:`dance.to_heatmap` (so maps of different methods are on one
            scale); if False the raw attributions are compared.
        percentile: winsorising level of :func:`dance.to_heatmap`.

    Returns:
        ``[B]`` float tensor. **Lower** is better (similar inputs, similar maps). For an image
        with ``x_hat == x``: NaN if the maps are equal too (0/0), inf otherwise.

    Example:
        >>> import torch
        >>> from dance.metrics import sensitivity
        >>> x = torch.zeros(1, 1, 2, 2); x_hat = x + 0.5          # ||x - x_hat|| = 1
        >>> e = torch.zeros(1, 2, 2); e_hat = torch.full((1, 2, 2), 0.25)   # ||e - e_hat|| = 0.5
        >>> sensitivity(e, e_hat, x, x_hat).tolist()
        [0.5]
    """
    inputs = check_batch(inputs, pixel_range=False)
    perturbed = check_batch(perturbed, name="perturbed", pixel_range=False)
    if perturbed.shape != inputs.shape:
        raise ValueError(f"perturbed must have the shape of inputs {tuple(inputs.shape)}, got {tuple(perturbed.shape)}")
    if heatmap:
        a = heatmaps(attributions, "attributions", percentile)
        b = heatmaps(perturbed_attributions, "perturbed_attributions", percentile)
    else:
        a = check_maps(attributions, "attributions").float()
        b = check_maps(perturbed_attributions, "perturbed_attributions").float()
    if a.shape != b.shape or a.shape[0] != inputs.shape[0]:
        raise ValueError(f"attributions and perturbed_attributions must have the same shape with one map per "
                         f"image, got {tuple(a.shape)} and {tuple(b.shape)} for {inputs.shape[0]} images")
    num = (a - b.to(a.device)).flatten(1).norm(dim=1).to(inputs.device)
    den = (inputs - perturbed.to(inputs.device)).flatten(1).float().norm(dim=1)
    return num / den  # x_hat == x: 0/0 -> NaN, a moved map -> inf, on purpose


def linf_ball_samples(inputs: torch.Tensor, radius: float, n_samples: int, seed: int = 0,
                      clamp: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    r"""Points drawn uniformly from the :math:`L_\infty` ball of ``radius`` around each input.

    The noise is drawn on the CPU from a generator seeded with ``seed`` and moved to the inputs'
    device, so a seed gives the same points on every device.

    Args:
        inputs: ``[B, C, H, W]``.
        radius: ball radius ``r > 0``.
        n_samples: points per input.
        seed: random seed.
        clamp: optional ``(low, high)`` to clip the points to the valid pixel range (this leaves
            the uniform distribution on the ball's part inside the range only approximately).

    Returns:
        ``[n_samples, B, C, H, W]`` tensor (sample-major).
    """
    x = check_batch(inputs, pixel_range=False)
    check_int(n_samples, "n_samples")
    radius = check_positive(radius, "radius")
    g = seeded_generator(seed)
    if clamp is not None:
        clamp = check_interval(clamp, "clamp")
    noise = torch.rand((n_samples,) + tuple(x.shape), generator=g, dtype=torch.float32)
    noise = ((2 * noise - 1) * radius).to(device=x.device, dtype=x.dtype)
    y = x.unsqueeze(0) + noise
    if clamp is not None:
        y = y.clamp(clamp[0], clamp[1])
    return y


def _distances(ex: torch.Tensor, ey: torch.Tensor, normalize: Optional[str]) -> torch.Tensor:
    ex = ex.flatten(1).float()
    ey = ey.flatten(1).float()
    if normalize == "unit":
        def unit(e):
            n = e.norm(dim=1, keepdim=True)
            return e / torch.where(n > 0, n, torch.ones_like(n))
        return (unit(ey) - unit(ex)).norm(dim=1)
    d = (ey - ex).norm(dim=1)
    if normalize == "relative":
        n = ex.norm(dim=1)
        return d / torch.where(n > 0, n, torch.ones_like(n))
    return d


def sampled_sensitivities(explain: Callable, inputs: torch.Tensor, target: TargetType = None, *,
                          radius: float = 0.1, n_samples: int = 50, normalize: Optional[str] = "unit",
                          seed: int = 0, batch_size: Optional[int] = None,
                          clamp: Optional[Tuple[float, float]] = (0.0, 1.0)) -> torch.Tensor:
    r"""The distances ``D(Φ(y_s), Φ(x))`` for ``n_samples`` points ``y_s`` of the :math:`L_\infty` ball.

    The common engine of :func:`max_sensitivity` (max over samples) and :func:`avg_sensitivity`
    (mean over samples); see those for the arguments.

    Returns:
        ``[B, n_samples]`` float tensor.
    """
    model = model_of(explain)  # when found: run in eval mode, and the class range is checked
    x = check_batch(inputs, model, pixel_range=False)
    check_choice(normalize, "normalize", NORMALIZATIONS)
    b = x.shape[0]
    if batch_size is not None:
        check_int(batch_size, "batch_size")
    if target is not None and model is not None:
        target = resolve_target(forward(model, x), target)
    else:
        target = as_target(target, b, x.device)
    ex = call_explain(explain, x, target)
    y = linf_ball_samples(x, radius, n_samples, seed, clamp).flatten(0, 1)  # sample-major [n*B, ...]
    t_all = None if target is None else target.repeat(n_samples)
    ex_all = ex.repeat((n_samples,) + (1,) * (ex.dim() - 1))
    step = y.shape[0] if batch_size is None else batch_size
    out = []
    for i in range(0, y.shape[0], step):  # batches of perturbed inputs, not one at a time
        t = t_all[i:i + step] if t_all is not None else target
        ey = call_explain(explain, y[i:i + step], t)
        out.append(_distances(ex_all[i:i + step], ey, normalize))
    return torch.cat(out).view(n_samples, b).t()


_YEH = "Yeh et al. (2019), How sensitive are sensitivity-based explanations?, §2"
_YEH_SETTINGS = ("D = L2, rho = L_inf, r = 0.1 (MNIST, CIFAR-10), 50 Monte Carlo samples, "
                 "explanations normalised to unit norm")


@metric("lower", _YEH + ", Definition 2.1 (max-sensitivity)", "yeh2019sensitive", _YEH_SETTINGS)
def max_sensitivity(explain: Callable, inputs: torch.Tensor, target: TargetType = None, *, radius: float = 0.1,
                    n_samples: int = 50, normalize: Optional[str] = "unit", seed: int = 0,
                    batch_size: Optional[int] = None, clamp: Optional[Tuple[float, float]] = (0.0, 1.0)
                    ) -> torch.Tensor:
    r"""Max-sensitivity :math:`\max_{\|y-x\|_\infty \le r} D(Φ(y), Φ(x))`, estimated by Monte Carlo.

    ``n_samples`` points are drawn uniformly from the :math:`L_\infty` ball of radius ``radius``
    (:func:`linf_ball_samples`), explained in batches, and the largest distance is kept.
    :math:`D` is the :math:`L_2` distance between the explanations after ``normalize``:

    * ``"unit"`` (Yeh et al.'s setting, the default): both explanations are scaled to unit
      :math:`L_2` norm first (an all-zero explanation stays zero);
    * ``"relative"``: :math:`\|Φ(y) - Φ(x)\|_2 / \|Φ(x)\|_2`, the definition of Captum's
      :func:`captum.metrics.sensitivity_max` (with ``norm_ord="fro"``);
    * ``None``: the raw :math:`\|Φ(y) - Φ(x)\|_2`.

    Args:
        explain: ``explain(inputs, target) -> attributions`` of the inputs' shape, e.g. the
            ``.attribute`` of a Captum method or of a :class:`dance.DecoyEnhanced`.
        inputs: ``[B, C, H, W]``.
        target: passed to ``explain``: an int, a ``LongTensor[B]`` (repeated for the samples) or None.
        radius: :math:`L_\infty` radius ``r`` (Yeh et al.: 0.1 on MNIST and CIFAR-10 in [0, 1] pixels).
        n_samples: Monte Carlo samples per input (Yeh et al.: 50).
        normalize: ``"unit"``, ``"relative"`` or ``None``, see above.
        seed: seed of the samples; equal seeds give equal samples on every device.
        batch_size: perturbed inputs per ``explain`` call (all ``B * n_samples`` at once if None).
        clamp: pixel range the samples are clipped to; default ``(0, 1)``, because ``dance`` works on
            [0, 1] images (:class:`dance.DecoyEnhanced` rejects others). Clipping makes the samples
            uniform on the part of the ball inside the pixel range only approximately; ``None``
            samples the whole ball, as Yeh et al. and Captum do.

    Returns:
        ``[B]`` float tensor. **Lower** is better.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from dance.metrics import max_sensitivity
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> s = max_sensitivity(Saliency(model).attribute, torch.rand(2, 1, 4, 4), 0, n_samples=5)
        >>> [round(v, 6) for v in s.tolist()]   # a linear model's gradient does not move
        [0.0, 0.0]
    """
    return sampled_sensitivities(explain, inputs, target, radius=radius, n_samples=n_samples,
                                 normalize=normalize, seed=seed, batch_size=batch_size, clamp=clamp).amax(dim=1)


@metric("lower", _YEH + ", Definition 2.2 (average-sensitivity)", "yeh2019sensitive", _YEH_SETTINGS)
def avg_sensitivity(explain: Callable, inputs: torch.Tensor, target: TargetType = None, *, radius: float = 0.1,
                    n_samples: int = 50, normalize: Optional[str] = "unit", seed: int = 0,
                    batch_size: Optional[int] = None, clamp: Optional[Tuple[float, float]] = (0.0, 1.0)
                    ) -> torch.Tensor:
    r"""Average-sensitivity :math:`E_{y \sim U(B_\infty(x, r))} D(Φ(y), Φ(x))`, by Monte Carlo.

    Same samples, distance and arguments as :func:`max_sensitivity` (with the same ``seed`` both
    use the same points), averaged instead of maximised.

    Returns:
        ``[B]`` float tensor. **Lower** is better.

    Example:
        >>> import torch
        >>> from captum.attr import Saliency
        >>> from dance.metrics import avg_sensitivity
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> avg_sensitivity(Saliency(model).attribute, torch.rand(2, 1, 4, 4), 0, n_samples=5).shape
        torch.Size([2])
    """
    return sampled_sensitivities(explain, inputs, target, radius=radius, n_samples=n_samples,
                                 normalize=normalize, seed=seed, batch_size=batch_size, clamp=clamp).mean(dim=1)
