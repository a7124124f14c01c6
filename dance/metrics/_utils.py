"""Shared argument checks and small tensor helpers of :mod:`dance.metrics`.

Everything here is device-agnostic: tensors stay where the caller put them.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from ..heatmap import to_heatmap

TargetType = Union[None, int, Sequence[int], torch.Tensor]


def check_images(inputs: torch.Tensor, name: str = "inputs") -> torch.Tensor:
    """``inputs`` must be a floating ``[B, C, H, W]`` tensor."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, C, H, W], got {type(inputs).__name__}")
    if inputs.dim() != 4:
        raise ValueError(
            f"{name} must have shape [B, C, H, W], got {tuple(inputs.shape)}; "
            f"add a batch dimension with {name}.unsqueeze(0) for one image"
        )
    if not inputs.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    return inputs


def check_model(model: nn.Module, name: str = "model") -> nn.Module:
    if not callable(model):
        raise TypeError(f"{name} must be a torch.nn.Module (or a callable returning logits), got {type(model).__name__}")
    return model


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_fraction(value, name: str, low: float = 0.0, high: float = 1.0, closed_low: bool = False) -> float:
    v = float(value)
    ok = (v >= low if closed_low else v > low) and v <= high
    if not ok:
        bracket = "[" if closed_low else "("
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")
    return v


def heatmaps(maps: torch.Tensor, name: str = "maps", percentile: float = 95.0) -> torch.Tensor:
    """``[B, H, W]`` non-negative maps as floats; ``[B, C, H, W]`` attributions go through
    :func:`dance.to_heatmap` first (abs, max over channels, winsorise, rescale to [0, 1])."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ([B, H, W] heatmaps or [B, C, H, W] attributions), "
                        f"got {type(maps).__name__}")
    if maps.dim() == 4:
        return to_heatmap(maps, percentile=percentile)
    if maps.dim() != 3:
        raise ValueError(f"{name} must have shape [B, H, W] (heatmaps) or [B, C, H, W] (attributions), "
                         f"got {tuple(maps.shape)}")
    maps = maps.detach().float()
    if bool((maps < 0).any()):
        raise ValueError(f"{name} given as [B, H, W] heatmaps must be non-negative; "
                         f"pass signed attributions as [B, C, H, W] or use dance.to_heatmap")
    return maps


def unit_heatmaps(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """Like :func:`heatmaps` but also requires values in [0, 1] (for 8-bit quantisation)."""
    h = heatmaps(maps, name)
    if bool((h > 1).any()):
        raise ValueError(f"{name} must lie in [0, 1] for this metric; rescale it, e.g. with dance.to_heatmap")
    return h


def resolve_target(model: Callable, inputs: torch.Tensor, target: TargetType, batch_size: Optional[int] = None
                   ) -> torch.Tensor:
    """Class index per image as a ``LongTensor[B]`` on the inputs' device.

    ``None`` means the class the model predicts for each image.
    """
    b = inputs.shape[0]
    if target is None:
        return forward(model, inputs, batch_size).argmax(dim=1)
    if isinstance(target, bool):
        raise TypeError("target must be None, an int, a sequence of ints or a LongTensor[B], got a bool")
    if isinstance(target, int):
        return torch.full((b,), target, dtype=torch.long, device=inputs.device)
    t = torch.as_tensor(target, device=inputs.device)
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    t = t.long().flatten()
    if t.numel() == 1:
        return t.expand(b).clone()
    if t.numel() != b:
        raise ValueError(f"target must have one class per image ({b}), got {t.numel()} values")
    return t


def forward(model: Callable, x: torch.Tensor, batch_size: Optional[int] = None) -> torch.Tensor:
    """``model(x)`` without building a graph, in chunks of ``batch_size`` images (all at once if None)."""
    with torch.no_grad():
        if batch_size is None or x.shape[0] <= batch_size:
            out = model(x)
        else:
            out = torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError("model must return a [batch, classes] tensor of logits, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out


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


def call_explain(explain: Callable, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Call ``explain(inputs, target)`` and check that it returns one map per input."""
    if not callable(explain):
        raise TypeError(f"explain must be a callable explain(inputs, target) -> attributions, "
                        f"got {type(explain).__name__}")
    out = explain(inputs, target)
    if isinstance(out, tuple) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.shape[0] != inputs.shape[0]:
        raise ValueError("explain(inputs, target) must return a tensor with one map per input image, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out.detach()


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator: random draws are made on the CPU and moved, so a seed gives the same
    numbers on every device."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


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
