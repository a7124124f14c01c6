"""How alike are two saliency maps? Rank correlation, top-k overlap, centre of mass, SSIM.

These compare a map with another map of the same image (an attacked input, a randomised model).
The directions registered here are those of the robustness reading (Ghorbani et al.): a robust
explanation keeps its map, so *higher* similarity is better. In the sanity check the reading is
reversed (a map that survives weight randomisation did not depend on the weights), see
:func:`dance.metrics.cascading_randomization`.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from .._checks import check_int, check_positive, optional_import
from ._registry import metric
from ._utils import heatmaps, pearson, rankdata

_GHORBANI = "Ghorbani, Abid & Zou (2019), Interpretation of neural networks is fragile, AAAI"


def _pair(maps_a: torch.Tensor, maps_b: torch.Tensor):
    a = heatmaps(maps_a, "maps_a")
    b = heatmaps(maps_b, "maps_b")
    if a.shape != b.shape:
        raise ValueError(f"maps_a and maps_b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b.to(a.device)


@metric("higher", "Spearman rank correlation; used by " + _GHORBANI + " and Adebayo et al. (2018)",
        "ghorbani2019interpretation",
        "flattened maps of one image; ties get their average rank (scipy.stats.spearmanr convention)")
def spearman(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two maps of each image.

    Pixels are ranked within each map (ties share their average rank, as
    :func:`scipy.stats.spearmanr` does) and the Pearson correlation of the ranks is returned.

    Direction: **higher** means the two maps order the pixels alike (robustness reading).

    Args:
        maps_a, maps_b: ``[B, H, W]`` non-negative maps, or ``[B, C, H, W]`` attributions
            (turned into heatmaps with :func:`dance.to_heatmap`).

    Returns:
        ``[B]`` float64 tensor in [-1, 1]; NaN where a map is constant.

    Example:
        >>> import torch
        >>> from dance.metrics import spearman
        >>> a = torch.arange(16.).view(1, 4, 4)
        >>> spearman(a, a ** 2).tolist()
        [1.0]
    """
    a, b = _pair(maps_a, maps_b)
    return pearson(rankdata(a.flatten(1)), rankdata(b.flatten(1)))


def _top_k_mask(flat: torch.Tensor, k: int) -> torch.Tensor:
    # Stable sort: ties are broken by pixel order (row-major), so results are deterministic.
    order = torch.argsort(flat, dim=1, descending=True, stable=True)[:, :k]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    return mask.scatter_(1, order, True)


@metric("higher", "top-k intersection of " + _GHORBANI, "ghorbani2019interpretation",
        "Ghorbani: k = 1000 of 227x227 pixels; DANCE paper: k = 5000 of 224x224 (about 10 %)")
def topk_intersection(maps_a: torch.Tensor, maps_b: torch.Tensor, k: int) -> torch.Tensor:
    """Share of the ``k`` most salient pixels of ``maps_a`` that are also among the ``k`` most
    salient pixels of ``maps_b``.

    Ties are broken by pixel order (row-major), so the answer is deterministic.

    Direction: **higher** means the important pixels stayed important.

    Args:
        maps_a, maps_b: ``[B, H, W]`` maps (or ``[B, C, H, W]`` attributions, via :func:`dance.to_heatmap`).
        k: number of pixels, ``1 <= k <= H*W``.

    Returns:
        ``[B]`` float tensor in [0, 1].

    Example:
        >>> import torch
        >>> from dance.metrics import topk_intersection
        >>> a = torch.tensor([[[4., 3.], [2., 1.]]]); b = torch.tensor([[[4., 1.], [2., 3.]]])
        >>> topk_intersection(a, b, k=2).tolist()
        [0.5]
    """
    a, b = _pair(maps_a, maps_b)
    check_int(k, "k", 1, a[0].numel())
    both = _top_k_mask(a.flatten(1), k) & _top_k_mask(b.flatten(1), k)
    return both.sum(dim=1).float() / k


def center_of_mass(maps: torch.Tensor) -> torch.Tensor:
    """Saliency-weighted mean pixel position ``(row, column)`` of each map.

    Pixel ``(i, j)`` sits at coordinates ``(i, j)`` (pixel centres on the integer grid).

    Args:
        maps: ``[B, H, W]`` non-negative maps (or ``[B, C, H, W]`` attributions, via :func:`dance.to_heatmap`).

    Returns:
        ``[B, 2]`` float tensor; NaN for a map with no mass.

    Example:
        >>> import torch
        >>> from dance.metrics import center_of_mass
        >>> m = torch.zeros(1, 5, 5); m[0, 1, 3] = 1.0
        >>> center_of_mass(m).tolist()
        [[1.0, 3.0]]
    """
    h = heatmaps(maps, "maps").to(torch.float64)
    _, height, width = h.shape
    rows = torch.arange(height, device=h.device, dtype=h.dtype).view(1, -1, 1)
    cols = torch.arange(width, device=h.device, dtype=h.dtype).view(1, 1, -1)
    mass = h.sum(dim=(1, 2))
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    com = torch.stack([(h * rows).sum(dim=(1, 2)) / safe, (h * cols).sum(dim=(1, 2)) / safe], dim=1)
    return torch.where((mass > 0).unsqueeze(1), com, torch.full_like(com, float("nan")))


@metric("lower", "centre-of-mass dislocation of " + _GHORBANI, "ghorbani2019interpretation",
        "Euclidean distance in pixels between the two centres of mass")
def center_shift(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Distance in pixels between the centres of mass (:func:`center_of_mass`) of two maps.

    Direction: **lower** means the map did not move.

    Returns:
        ``[B]`` float64 tensor (NaN where a map has no mass).

    Example:
        >>> import torch
        >>> from dance.metrics import center_shift
        >>> a = torch.zeros(1, 5, 5); a[0, 0, 0] = 1.0
        >>> b = torch.zeros(1, 5, 5); b[0, 3, 4] = 1.0
        >>> center_shift(a, b).tolist()
        [5.0]
    """
    a, b = _pair(maps_a, maps_b)
    return (center_of_mass(a) - center_of_mass(b)).norm(dim=1)


@metric("higher", "structural similarity (Wang et al., 2004) via skimage.metrics.structural_similarity, "
        "as used by Adebayo et al. (2018) and the DANCE paper's A8", "adebayo2018sanity",
        "heatmaps in [0, 1], data_range = 1, scikit-image's default 7x7 window")
def ssim(maps_a: torch.Tensor, maps_b: torch.Tensor, *, data_range: float = 1.0,
         win_size: Optional[int] = None) -> torch.Tensor:
    """Structural similarity index of two heatmaps per image, by :func:`skimage.metrics.structural_similarity`.

    The maps go to the CPU for scikit-image and the result comes back to their device.

    Direction: **higher** means more alike (robustness reading); in the sanity check a low SSIM
    after randomisation is the desired outcome.

    Args:
        maps_a, maps_b: ``[B, H, W]`` heatmaps in [0, 1] (or ``[B, C, H, W]`` attributions, via
            :func:`dance.to_heatmap`).
        data_range: the value range of the maps (1 for heatmaps).
        win_size: odd window side; ``None`` uses scikit-image's 7 (maps must be at least 7x7).

    Returns:
        ``[B]`` float64 tensor, 1 for identical maps.

    Example:
        >>> import torch
        >>> from dance.metrics import ssim
        >>> a = torch.rand(2, 16, 16)
        >>> ssim(a, a).tolist()
        [1.0, 1.0]
    """
    structural_similarity = optional_import("skimage.metrics", package="scikit-image",
                                            needed_by="dance.metrics.ssim").structural_similarity

    a, b = _pair(maps_a, maps_b)
    data_range = check_positive(data_range, "data_range")
    if win_size is not None and (check_int(win_size, "win_size", 3) % 2 == 0):
        raise ValueError(f"win_size must be odd, got {win_size}")
    side = 7 if win_size is None else win_size
    if min(a.shape[1:]) < side:
        raise ValueError(f"maps must be at least {side}x{side} for SSIM with win_size={side}; "
                         f"got {tuple(a.shape[1:])}, pass a smaller odd win_size")
    a_np = a.cpu().numpy().astype(np.float64)
    b_np = b.cpu().numpy().astype(np.float64)
    values = [structural_similarity(x, y, data_range=float(data_range), win_size=win_size)
              for x, y in zip(a_np, b_np)]
    return torch.tensor(values, dtype=torch.float64, device=a.device)
