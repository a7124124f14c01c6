r"""Saliency fidelity :math:`S_F` of the DANCE paper (§4.2), after Dabkowski & Gal (2017).

.. math::

    S_F(E, x, c) = -\bigl(\log F^c(E \circ x) - \log F^c(E_{mean} \circ x)\bigr)

**What is implemented.** ``E`` is the map turned into a heatmap in [0, 1] by
:func:`dance.to_heatmap` (paper §4.1: absolute value, maximum over colour channels, winsorised,
rescaled). The heatmap has one channel, so ``E ∘ x`` multiplies every colour channel of pixel
``(i, j)`` by ``E[i, j]``, and ``E_mean`` (the paper: "the mean of E on each channel") is the mean
of that single channel over the image, a scalar per image: ``E_mean ∘ x`` is the image uniformly
dimmed to the same average brightness factor. ``F^c`` is the softmax probability of class ``c``,
the class the model predicts for ``x`` (or a given target).

**Direction, and the paper's inconsistency.** With this formula a map that keeps the evidence for
``c`` gives ``F^c(E∘x) > F^c(E_mean∘x)`` and hence a *negative* ``S_F``; the paper says
accordingly that "a lower value ... implies a faithful saliency method", and this module
registers ``direction = "lower"``. Yet the paper's results (§4.3, Fig. 3, Fig. 6) call ``S_F``
"consistently higher with decoys" and read that as an improvement, which matches the opposite
sign, i.e. the log-probability *gain* ``-S_F``. Both cannot hold; we implement the formula as
printed, and the experiment chapters report ``S_F`` together with the two readings.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._checks import TargetType, check_batch, check_callable_model, check_int, evaluating, resolve_target
from ._registry import metric
from ._utils import class_score, forward, unit_heatmaps


@metric("lower",
        "DANCE paper §4.2 (Lu et al., 2021), after Dabkowski & Gal (2017); the paper's results read it "
        "as higher-is-better, see the module docstring",
        "lu2021dance",
        "heatmaps as in §4.1 (abs, max over channels, 95th-percentile winsorising, [0, 1]); c = predicted "
        "class; F^c = softmax probability")
def fidelity(model: Callable, inputs: torch.Tensor, attributions: torch.Tensor, target: TargetType = None, *,
             percentile: float = 95.0, batch_size: Optional[int] = None) -> torch.Tensor:
    r"""Saliency fidelity ``S_F = log F^c(E_mean ∘ x) - log F^c(E ∘ x)`` per image.

    Args:
        model: classifier returning logits, taking images like ``inputs`` (for example a
            :class:`dance.Normalized` model on [0, 1] images). It runs in eval mode (its train/eval
            flags are restored afterwards) and is not changed.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, C, H, W]`` signed saliency maps (turned into heatmaps with
            :func:`dance.to_heatmap` at ``percentile``) or ``[B, H, W]`` heatmaps already in [0, 1].
        target: the class ``c``; ``None`` (the paper's choice) uses the class the model predicts for
            ``inputs``; an int or ``LongTensor[B]`` otherwise.
        percentile: winsorising level of :func:`dance.to_heatmap` (paper §4.1: 95).
        batch_size: images per forward pass (all ``2B`` at once if ``None``).

    Returns:
        ``[B]`` float tensor on the inputs' device. **Lower** is more faithful by the paper's
        definition (negative when the map keeps more evidence for ``c`` than a uniform map of the
        same mean); see the module docstring for the paper's opposite reading of its results.

    Example:
        >>> import torch
        >>> from dance.metrics import fidelity
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> x = torch.rand(3, 1, 4, 4)
        >>> fidelity(model, x, torch.randn(3, 1, 4, 4)).shape
        torch.Size([3])
    """
    check_callable_model(model)
    x = check_batch(inputs, model)
    if batch_size is not None:
        check_int(batch_size, "batch_size")
    h = unit_heatmaps(attributions, "attributions", percentile=percentile).to(x.device)
    if h.shape != (x.shape[0],) + tuple(x.shape[2:]):
        raise ValueError(f"attributions must give one [H, W] map per image of inputs {tuple(x.shape)}, "
                         f"got maps of shape {tuple(h.shape)}")
    b = x.shape[0]
    with evaluating(model):
        # the images' own forward pass only to predict the class: a given target needs none (its range is
        # checked against the class count of the masked images' logits)
        predicted = forward(model, x, batch_size) if target is None else None
        e = h.unsqueeze(1).to(x.dtype)  # [B, 1, H, W], broadcast over colour channels
        e_mean = e.mean(dim=(2, 3), keepdim=True)  # one channel -> one mean per image
        logits = forward(model, torch.cat([e * x, e_mean * x]), batch_size)
    c = resolve_target(logits[:b] if predicted is None else predicted, target)
    logp = class_score(logits, torch.cat([c, c]), "log_prob")
    return -(logp[:b] - logp[b:])
