"""Project signed saliency maps onto [0, 1] heatmaps (paper §4.1)."""
from __future__ import annotations

import torch

from ._checks import check_maps, check_range


def to_heatmap(attributions: torch.Tensor, percentile: float = 95.0) -> torch.Tensor:
    """Turn signed saliency maps into heatmaps in [0, 1], as in paper §4.1.

    Steps, per image: absolute value (Smilkov et al.), maximum over colour channels
    (Simonyan et al.), winsorise at the ``percentile``-th percentile of the image's
    values so that a few outlier pixels do not black out the rest, and rescale linearly
    so that the smallest value maps to 0 and the winsorised maximum to 1.

    Args:
        attributions: ``[B, C, H, W]`` (or one map ``[C, H, W]``), any real dtype.
        percentile: winsorising level in (0, 100]; 100 keeps the raw maximum.

    Returns:
        ``[B, H, W]`` float tensor in [0, 1] on the input's device. A constant map becomes all zeros.
        A map with a NaN or infinite value is refused (``ValueError``): it has no heatmap, and an
        all-zero one would read as "nothing is salient".

    Example:
        >>> import torch, dance
        >>> h = dance.to_heatmap(torch.randn(2, 3, 8, 8))
        >>> h.shape, float(h.min()) >= 0.0, float(h.max()) <= 1.0
        (torch.Size([2, 8, 8]), True, True)
    """
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"attributions must be a torch.Tensor, got {type(attributions).__name__}")
    if attributions.dim() == 3:
        attributions = attributions.unsqueeze(0)
    if attributions.dim() != 4:
        raise ValueError(
            f"attributions must have shape [B, C, H, W] or [C, H, W], got {tuple(attributions.shape)}"
        )
    attributions = check_maps(attributions, "attributions")
    percentile = check_range(percentile, "percentile", 0.0, 100.0, closed_low=False)
    a = attributions.detach().abs().amax(dim=1).float()  # [B, H, W]
    flat = a.flatten(1)
    top = torch.quantile(flat, percentile / 100.0, dim=1).view(-1, 1, 1)
    low = flat.amin(dim=1).view(-1, 1, 1)
    span = top - low
    # A constant map has no contrast to show: it becomes all zeros rather than NaN.
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (torch.minimum(a, top) - low) / safe, torch.zeros_like(a))
