r"""Faithfulness correlation of Yeh et al. (2019, §4 "Metrics").

For random subsets :math:`S` of ``N`` input features, each feature :math:`i \in S` is moved by
:math:`\epsilon_i \sim U[-0.5, 0.5]` (truncated so that :math:`\hat x_i = x_i - \epsilon_i` stays
in [0, 1]), and the metric is the Pearson correlation over subsets between

.. math::

    \sum_{i \in S} \epsilon_i \, Φ_f(x)_i \quad\text{and}\quad f(x) - f(\hat x).

A faithful explanation predicts how much the output drops when the features move (a first-order
Taylor reading of the attribution). This variant by Yeh et al. replaces the "set to zero"
removal of Bhatt et al. (2020), which favours bright pixels, with random signed perturbations.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._checks import (TargetType, check_batch, check_callable_model, check_choice, check_int, check_maps,
                       evaluating, resolve_target, seeded_generator)
from ._registry import metric
from ._utils import class_score, forward, pearson


@metric("higher", "Yeh et al. (2019), How sensitive are sensitivity-based explanations?, §4", "yeh2019sensitive",
        "N = 300 (MNIST) / 500 (CIFAR-10) features per subset, 500 subsets, eps ~ U[-0.5, 0.5] truncated to [0, 1]")
def faithfulness_correlation(model: Callable, inputs: torch.Tensor, attributions: torch.Tensor,
                             target: TargetType = None, *, subset_size: int = 500, n_subsets: int = 500,
                             seed: int = 0, output: str = "logit", batch_size: Optional[int] = 256
                             ) -> torch.Tensor:
    r"""Pearson correlation between predicted and actual output changes under random perturbations.

    Features are the individual entries of the ``[C, H, W]`` input (each colour value of each pixel).
    Draws come from a CPU generator seeded with ``seed`` (same numbers on every device), one
    subset at a time, so the result does not depend on ``batch_size``.

    Args:
        model: classifier returning logits (run in eval mode, its flags restored; left unchanged).
        inputs: ``[B, C, H, W]`` images with values in [0, 1] (the perturbed copies are truncated
            to [0, 1]; wrap a model that expects standardised inputs in :class:`dance.Normalized`).
        attributions: ``Φ(x)``: ``[B, C, H, W]`` signed attributions, one per image (``[B, 1, H, W]``
            or ``[B, H, W]`` maps are broadcast over the channels, never over images).
        target: class whose output is explained; ``None`` = the predicted class.
        subset_size: ``N``, features perturbed per subset (Yeh et al.: 300 on MNIST, 500 on CIFAR-10).
        n_subsets: number of random subsets (Yeh et al.: 500).
        seed: random seed.
        output: ``"logit"`` (default; the paper says "the target output" without naming it),
            ``"prob"`` or ``"log_prob"``.
        batch_size: perturbed images per forward pass.

    Returns:
        ``[B]`` float64 tensor in [-1, 1]. **Higher** is better. NaN if the attributions are zero
        on every sampled subset or the output never changes.

    Example:
        >>> import torch
        >>> from dance.metrics import faithfulness_correlation
        >>> lin = torch.nn.Linear(16, 2)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), lin)
        >>> x = torch.rand(1, 1, 4, 4)
        >>> grad = lin.weight[0].detach().view(1, 1, 4, 4)   # the exact attribution of a linear logit
        >>> r = faithfulness_correlation(model, x, grad, 0, subset_size=4, n_subsets=50)
        >>> round(float(r), 6)
        1.0
    """
    check_callable_model(model)
    x = check_batch(inputs, model, pixel_range=True)  # the perturbations are truncated to [0, 1]
    check_int(n_subsets, "n_subsets", 2)
    if batch_size is not None:
        check_int(batch_size, "batch_size")
    check_choice(output, "output", ("logit", "prob", "log_prob"))
    b = x.shape[0]
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"attributions must be a torch.Tensor, got {type(attributions).__name__}")
    a = check_maps(attributions, "attributions")
    if a.dim() == 3:
        a = a.unsqueeze(1)
    if a.dim() != 4 or a.shape[0] != b or a.shape[2:] != x.shape[2:] or a.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"attributions of shape {tuple(attributions.shape)} do not match inputs "
                         f"{tuple(x.shape)}; pass one map per image: [B, C, H, W], [B, 1, H, W] or [B, H, W]")
    a = a.to(device=x.device, dtype=torch.float32).expand_as(x)
    d = x[0].numel()
    check_int(subset_size, "subset_size", 1, d)
    g = seeded_generator(seed)
    with evaluating(model):
        f_all = forward(model, x, batch_size)
        c = resolve_target(f_all, target)
        f_x = class_score(f_all, c, output)
    xf = x.flatten(1)
    af = a.flatten(1)
    predicted = torch.empty(n_subsets, b, dtype=torch.float64, device=x.device)
    actual = torch.empty(n_subsets, b, dtype=torch.float64, device=x.device)
    chunk = max(1, (batch_size or n_subsets * b) // b)  # subsets per forward pass
    pending, start = [], 0
    for s in range(n_subsets):
        order = torch.rand((b, d), generator=g).argsort(dim=1)[:, :subset_size]
        mask = torch.zeros((b, d), dtype=torch.bool).scatter_(1, order, True)
        eps = torch.rand((b, d), generator=g) - 0.5
        eps = (eps * mask).to(device=x.device, dtype=x.dtype)
        x_hat = (xf - eps).clamp(0.0, 1.0)
        eps = xf - x_hat  # truncation: the perturbation actually applied
        predicted[s] = (eps.float() * af).sum(dim=1).double()
        pending.append(x_hat)
        if len(pending) == chunk or s == n_subsets - 1:
            batch = torch.cat(pending).view((-1,) + tuple(x.shape[1:]))
            f_hat = class_score(forward(model, batch, batch_size), c.repeat(len(pending)), output)
            actual[start:s + 1] = (f_x.repeat(len(pending)) - f_hat).view(len(pending), b).double()
            pending, start = [], s + 1
    return pearson(predicted.t(), actual.t())
