"""Small tensor helpers of :mod:`dance.metrics` (the argument checks live in :mod:`dance._checks`).

Everything here is device-agnostic: tensors stay where the caller put them.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .._checks import check_logits, check_maps, evaluating, gradients_on, model_of, ordinary
from ..heatmap import to_heatmap


def heatmaps(maps: torch.Tensor, name: str = "maps", percentile: float = 95.0) -> torch.Tensor:
    """``[B, H, W]`` non-negative maps as floats; ``[B, C, H, W]`` attributions go through
    :func:`dance.to_heatmap` first (abs, max over channels, winsorise, rescale to [0, 1])."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ([B, H, W] heatmaps or [B, C, H, W] attributions), "
                        f"got {type(maps).__name__}")
    if maps.dim() not in (3, 4):
        raise ValueError(f"{name} must have shape [B, H, W] (heatmaps) or [B, C, H, W] (attributions), "
                         f"got {tuple(maps.shape)}")
    maps = check_maps(maps, name)
    if maps.dim() == 4:
        return to_heatmap(maps, percentile=percentile)
    maps = maps.float()
    if bool((maps < 0).any()):
        raise ValueError(f"{name} given as [B, H, W] heatmaps must be non-negative; "
                         f"pass signed attributions as [B, C, H, W] or use dance.to_heatmap")
    return maps


def unit_heatmaps(maps: torch.Tensor, name: str = "maps", percentile: float = 95.0) -> torch.Tensor:
    """Like :func:`heatmaps` but also requires values in [0, 1]."""
    h = heatmaps(maps, name, percentile)
    if bool((h > 1).any()):
        raise ValueError(f"{name} given as [B, H, W] heatmaps must lie in [0, 1], got a maximum of "
                         f"{float(h.max()):.4g}; rescale them, e.g. with dance.to_heatmap, or pass the "
                         f"[B, C, H, W] attributions")
    return h


def forward(model: Callable, x: torch.Tensor, batch_size: Optional[int] = None) -> torch.Tensor:
    """``model(x)`` in eval mode without building a graph, in chunks of ``batch_size`` images
    (all at once if None); the output must be ``[batch, classes]`` logits."""
    outs = []
    step = x.shape[0] if batch_size is None else batch_size
    with evaluating(model), torch.no_grad():
        for i in range(0, x.shape[0], step):
            outs.append(check_logits(model(x[i:i + step])))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def class_score(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """Pick the target class's score: ``"logit"``, ``"prob"`` (softmax) or ``"log_prob"``."""
    if output == "logit":
        s = logits
    elif output == "prob":
        s = logits.float().softmax(dim=1)
    elif output == "log_prob":
        s = logits.float().log_softmax(dim=1)
    else:
        raise ValueError(f"output must be 'logit', 'prob' or 'log_prob', got {output!r}")
    return s.gather(1, target.view(-1, 1)).squeeze(1)


def call_explain(explain: Callable, inputs: torch.Tensor, target) -> torch.Tensor:
    """Call ``explain(inputs, target)`` as ``dance`` calls models: on a copy of the inputs, with
    gradients available (also under ``torch.inference_mode()``), the model found behind
    ``explain`` (:func:`dance._checks.model_of`) in eval mode; check one map per input."""
    if not callable(explain):
        raise TypeError(f"explain must be a callable explain(inputs, target) -> attributions, "
                        f"got {type(explain).__name__}")
    with gradients_on(), evaluating(model_of(explain)):
        # ordinary copies: under torch.inference_mode() the inputs and the target (whose indices
        # autograd saves) would be inference tensors, which autograd refuses
        out = explain(ordinary(inputs), ordinary(target) if isinstance(target, torch.Tensor) else target)
    if isinstance(out, tuple) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.shape[0] != inputs.shape[0]:
        raise ValueError("explain(inputs, target) must return a tensor with one map per input image, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out.detach()


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) along the last dimension, batched.

    Same convention as :func:`scipy.stats.rankdata` with ``method="average"``.
    """
    s, _ = torch.sort(x, dim=-1)
    less = torch.searchsorted(s, x.contiguous(), right=False)
    less_equal = torch.searchsorted(s, x.contiguous(), right=True)
    # The tied block occupies 0-based positions less .. less_equal-1; its mean 1-based rank:
    return (less + less_equal + 1).to(torch.float64) / 2.0


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation along the last dimension (NaN where one side is constant)."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    num = (a * b).sum(dim=-1)
    den = torch.sqrt((a * a).sum(dim=-1) * (b * b).sum(dim=-1))
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.full_like(num, float("nan")))
