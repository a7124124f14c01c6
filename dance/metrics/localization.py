r"""Weakly supervised object localization from saliency maps (DANCE paper A12).

The paper follows Dabkowski & Gal (2017) and Fong & Vedaldi (2017): threshold the map, take the
tightest box around what remains, and count the image as localised when that box has
IoU > 0.5 with one of the ground-truth boxes. The three thresholds of Fong & Vedaldi, at a
fraction :math:`\alpha` (the paper's Table A1 uses :math:`\alpha = 0.25` for all three), are
implemented as:

* **value**: keep pixels with :math:`h_i \ge \alpha \max_j h_j`;
* **energy**: keep the smallest set of most salient pixels that holds a fraction
  :math:`\alpha` of the total saliency :math:`\sum_j h_j` (i.e. all pixels at least as salient
  as the :math:`k`-th most salient one, :math:`k` the smallest count whose cumulative sum
  reaches :math:`\alpha \sum_j h_j`; ties at the cut are all kept);
* **mean**: keep pixels with :math:`h_i \ge \alpha \cdot \operatorname{mean}_j h_j`.

Fong & Vedaldi tune :math:`\alpha` per method on a held-out set; the DANCE paper reports one
value, 0.25. Maps are the non-negative heatmaps of :func:`dance.to_heatmap` (or any
``[B, H, W]`` non-negative maps).

**Box convention.** Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates, ``x`` along the
width (columns) and ``y`` along the height (rows), **upper corner exclusive**: the box covers
columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``, its area is ``(x1-x0)*(y1-y0)`` pixels (as in
Python slicing and torchvision). ImageNet's XML annotations give inclusive pixel corners; add 1
to ``xmax`` and ``ymax`` to convert.

Also here: the share of saliency mass inside a ground-truth mask (Quantus'
``RelevanceMassAccuracy``, the "energy-based pointing game" of Score-CAM) and the pointing game
(Zhang et al., 2018).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_int, check_number
from ._registry import metric
from ._utils import heatmaps

METHODS = ("value", "energy", "mean")
BoxesType = Union[torch.Tensor, Sequence[torch.Tensor]]

_A12 = "DANCE paper A12, thresholds of Fong & Vedaldi (2017), protocol of Dabkowski & Gal (2017)"


def threshold_mask(maps: torch.Tensor, method: str = "value", alpha: float = 0.25) -> torch.Tensor:
    """The pixels a thresholding strategy keeps (see the module docstring).

    Args:
        maps: ``[B, H, W]`` non-negative maps (or ``[B, C, H, W]`` attributions, via :func:`dance.to_heatmap`).
        method: ``"value"``, ``"energy"`` or ``"mean"``.
        alpha: the fraction; in (0, 1] for value and energy, > 0 for mean.

    Returns:
        ``[B, H, W]`` bool mask. A map with no mass keeps every pixel (every pixel reaches a zero threshold).
    """
    h = heatmaps(maps, "maps").to(torch.float64)
    check_choice(method, "method", METHODS)
    alpha = check_number(alpha, "alpha")
    if not alpha > 0 or (method != "mean" and alpha > 1):
        raise ValueError(f"alpha must be in (0, 1] for {method} thresholding (> 0 for mean), got {alpha!r}")
    flat = h.flatten(1)
    if method == "value":
        t = alpha * flat.amax(dim=1)
    elif method == "mean":
        t = alpha * flat.mean(dim=1)
    else:
        s, _ = torch.sort(flat, dim=1, descending=True)
        cum = torch.cumsum(s, dim=1)
        need = alpha * flat.sum(dim=1, keepdim=True)
        # smallest k with cum[k-1] >= need; a relative tolerance absorbs round-off at alpha = 1
        k = (cum < need * (1 - 1e-12)).sum(dim=1, keepdim=True).clamp(max=flat.shape[1] - 1)
        t = s.gather(1, k).squeeze(1)
    return h >= t.view(-1, 1, 1)


def tightest_box(mask: torch.Tensor) -> torch.Tensor:
    """Smallest box ``(x0, y0, x1, y1)`` (upper corner exclusive) around the true pixels of each mask.

    Args:
        mask: ``[B, H, W]`` bool.

    Returns:
        ``[B, 4]`` int64; ``(0, 0, 0, 0)`` for an empty mask.

    Example:
        >>> import torch
        >>> from dance.metrics import tightest_box
        >>> m = torch.zeros(1, 6, 8, dtype=torch.bool); m[0, 1:3, 2:7] = True
        >>> tightest_box(m).tolist()
        [[2, 1, 7, 3]]
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a [B, H, W] bool tensor, got {type(mask).__name__}")
    if mask.dim() != 3:
        raise ValueError(f"mask must be a [B, H, W] tensor, got shape {tuple(mask.shape)}")
    mask = mask.bool()
    rows = mask.any(dim=2).to(torch.uint8)  # [B, H]
    cols = mask.any(dim=1).to(torch.uint8)  # [B, W]
    height, width = mask.shape[1:]
    y0 = rows.argmax(dim=1)
    y1 = height - rows.flip(1).argmax(dim=1)
    x0 = cols.argmax(dim=1)
    x1 = width - cols.flip(1).argmax(dim=1)
    box = torch.stack([x0, y0, x1, y1], dim=1).long()
    empty = ~mask.flatten(1).any(dim=1)
    return torch.where(empty.unsqueeze(1), torch.zeros_like(box), box)


def saliency_box(maps: torch.Tensor, method: str = "value", alpha: float = 0.25) -> torch.Tensor:
    """Predicted object box: threshold the map (:func:`threshold_mask`), take the tightest box.

    Returns:
        ``[B, 4]`` int64 boxes ``(x0, y0, x1, y1)``, upper corner exclusive.

    Example:
        >>> import torch
        >>> from dance.metrics import saliency_box
        >>> h = torch.zeros(1, 8, 8); h[0, 2:5, 3:6] = 1.0; h[0, 7, 7] = 0.1
        >>> saliency_box(h, "value", 0.25).tolist()
        [[3, 2, 6, 5]]
    """
    return tightest_box(threshold_mask(maps, method, alpha))


def _gt_boxes(boxes: BoxesType, b: int, device) -> torch.Tensor:
    """Ground-truth boxes as ``[B, K, 4]`` float (images with fewer boxes padded by empty boxes)."""
    if isinstance(boxes, torch.Tensor):
        t = boxes.detach().to(device=device, dtype=torch.float64)
        if t.dim() == 2:
            t = t.unsqueeze(1)
        if t.dim() != 3 or t.shape[0] != b or t.shape[2] != 4:
            raise ValueError(f"boxes must be [B, 4], [B, K, 4] or a list of B [K_i, 4] tensors for B = {b}, "
                             f"got {tuple(boxes.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError("boxes must hold finite pixel coordinates (x0, y0, x1, y1)")
        return t
    if not isinstance(boxes, (list, tuple)) or len(boxes) != b:
        raise ValueError(f"boxes must be [B, 4], [B, K, 4] or a list of B = {b} tensors of shape [K_i, 4]")
    per = [torch.as_tensor(x, dtype=torch.float64, device=device).reshape(-1, 4) for x in boxes]
    k = max(1, max(p.shape[0] for p in per))
    out = torch.zeros(b, k, 4, dtype=torch.float64, device=device)
    for i, p in enumerate(per):
        out[i, :p.shape[0]] = p
    return out


def box_iou(boxes: torch.Tensor, gt_boxes: BoxesType) -> torch.Tensor:
    """Intersection over union of each predicted box with the best-matching ground-truth box.

    Args:
        boxes: ``[B, 4]`` predicted boxes ``(x0, y0, x1, y1)``, upper corner exclusive.
        gt_boxes: ``[B, 4]``, ``[B, K, 4]`` or a list of ``B`` tensors ``[K_i, 4]`` in the same
            convention (empty padding boxes never match).

    Returns:
        ``[B]`` float64 tensor: the largest IoU over an image's ground-truth boxes (0 when the
        union is empty).

    Example:
        >>> import torch
        >>> from dance.metrics import box_iou
        >>> box_iou(torch.tensor([[0, 0, 4, 4]]), torch.tensor([[2, 0, 6, 4]])).tolist()   # 8 / 24
        [0.3333333333333333]
    """
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"boxes must be a [B, 4] tensor of (x0, y0, x1, y1), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a [B, 4] tensor of (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    p = boxes.to(torch.float64).unsqueeze(1)  # [B, 1, 4]
    g = _gt_boxes(gt_boxes, boxes.shape[0], boxes.device)
    iw = (torch.minimum(p[..., 2], g[..., 2]) - torch.maximum(p[..., 0], g[..., 0])).clamp(min=0)
    ih = (torch.minimum(p[..., 3], g[..., 3]) - torch.maximum(p[..., 1], g[..., 1])).clamp(min=0)
    inter = iw * ih

    def area(x):
        return (x[..., 2] - x[..., 0]).clamp(min=0) * (x[..., 3] - x[..., 1]).clamp(min=0)

    union = area(p) + area(g) - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                      torch.zeros_like(union))
    return iou.amax(dim=1)


@metric("higher", _A12, "fong2017interpretable", "ILSVRC'14 localization, VGG16, alpha = 0.25 for value, "
        "energy and mean thresholding (Table A1)")
def localization_iou(maps: torch.Tensor, gt_boxes: BoxesType, *, method: str = "value",
                     alpha: float = 0.25) -> torch.Tensor:
    """IoU of the box predicted from each map (:func:`saliency_box`) with the best ground-truth box.

    Args:
        maps: ``[B, H, W]`` non-negative maps or ``[B, C, H, W]`` attributions (via :func:`dance.to_heatmap`).
        gt_boxes: see :func:`box_iou`.
        method, alpha: see :func:`threshold_mask` (paper: 0.25 for all three methods).

    Returns:
        ``[B]`` float64 tensor in [0, 1]. **Higher** is better.
    """
    h = heatmaps(maps, "maps")
    return box_iou(saliency_box(h, method, alpha), gt_boxes)


@metric("higher", _A12, "dabkowski2017real", "success when IoU > 0.5 with any ground-truth box; the mean over "
        "images is the localization accuracy of Table A1 (Gradient: 0.662 / 0.715 / 0.662)")
def localization_success(maps: torch.Tensor, gt_boxes: BoxesType, *, method: str = "value", alpha: float = 0.25,
                         iou_threshold: float = 0.5) -> torch.Tensor:
    """Whether the predicted box has IoU strictly greater than ``iou_threshold`` with any ground-truth box.

    Returns:
        ``[B]`` bool tensor; its mean is the localization accuracy. **Higher** (more True) is better.

    Example:
        >>> import torch
        >>> from dance.metrics import localization_success
        >>> h = torch.zeros(1, 8, 8); h[0, 2:6, 2:6] = 1.0
        >>> localization_success(h, torch.tensor([[2, 2, 6, 7]])).tolist()    # IoU 16/20
        [True]
    """
    return localization_iou(maps, gt_boxes, method=method, alpha=alpha) > float(iou_threshold)


def box_mask(boxes: BoxesType, height: int, width: int) -> torch.Tensor:
    """Boolean ``[B, H, W]`` masks of the union of each image's boxes (upper corner exclusive)."""
    check_int(height, "height")
    check_int(width, "width")
    if not isinstance(boxes, (torch.Tensor, list, tuple)) or len(boxes) == 0:
        raise ValueError("boxes must be [B, 4], [B, K, 4] or a list of B >= 1 tensors of shape [K_i, 4]")
    dev = boxes.device if isinstance(boxes, torch.Tensor) else torch.as_tensor(boxes[0]).device
    g = _gt_boxes(boxes, len(boxes), dev)  # [B, K, 4]
    ys = torch.arange(height, device=dev, dtype=torch.float64).view(1, 1, -1, 1)
    xs = torch.arange(width, device=dev, dtype=torch.float64).view(1, 1, 1, -1)
    g = g.view(g.shape[0], g.shape[1], 4, 1, 1)
    inside = (xs >= g[:, :, 0]) & (xs < g[:, :, 2]) & (ys >= g[:, :, 1]) & (ys < g[:, :, 3])
    return inside.any(dim=1)


def _mask(masks: torch.Tensor, shape) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        raise TypeError("masks must be a [B, H, W] bool tensor (use box_mask to turn boxes into masks)")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dtype != torch.bool and bool(((masks != 0) & (masks != 1)).any()):
        raise ValueError(f"masks must be boolean (True on the object) or hold only 0 and 1, got other values "
                         f"in a {masks.dtype} tensor; threshold it first, e.g. masks > 0.5")
    if tuple(masks.shape) != tuple(shape):
        raise ValueError(f"masks must have the maps' shape {tuple(shape)} (or [B, 1, H, W]), got {tuple(masks.shape)}")
    return masks.bool()


@metric("higher", "share of saliency mass inside the ground truth (Quantus RelevanceMassAccuracy, Arras et al. "
        "2022; energy-based pointing game of Score-CAM)", "hedstrom2023quantus",
        "not used in the DANCE paper; complements A12")
def mass_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""Share of the map's mass :math:`\sum_{i \in M} h_i / \sum_i h_i` inside the ground-truth mask ``M``.

    Args:
        maps: ``[B, H, W]`` non-negative maps or ``[B, C, H, W]`` attributions (via :func:`dance.to_heatmap`).
        masks: ``[B, H, W]`` (or ``[B, 1, H, W]``) bool object masks; :func:`box_mask` makes them from boxes.

    Returns:
        ``[B]`` float64 tensor in [0, 1]; NaN for an empty mask or a map with no mass. **Higher** is better.

    Example:
        >>> import torch
        >>> from dance.metrics import mass_in_mask
        >>> h = torch.tensor([[[3., 1.], [0., 0.]]]); m = torch.tensor([[[True, False], [False, False]]])
        >>> mass_in_mask(h, m).tolist()
        [0.75]
    """
    h = heatmaps(maps, "maps").to(torch.float64)
    m = _mask(masks, h.shape).to(h.device)
    total = h.sum(dim=(1, 2))
    inside = (h * m).sum(dim=(1, 2))
    ok = (total > 0) & m.flatten(1).any(dim=1)
    return torch.where(ok, inside / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))


@metric("higher", "pointing game of Zhang et al. (2018), Top-down neural attention by excitation backprop",
        "", "Zhang et al.: 15-pixel tolerance at 224x224; Quantus PointingGame: no tolerance")
def pointing_game(maps: torch.Tensor, masks: torch.Tensor, *, tolerance: float = 0.0) -> torch.Tensor:
    """Hit (1) when the map's maximum lies on the object (within ``tolerance`` pixels), miss (0) otherwise.

    Every pixel that attains the maximum counts (as in Quantus' ``PointingGame``), so the result
    does not depend on how ties are ordered.

    Args:
        maps: ``[B, H, W]`` non-negative maps or ``[B, C, H, W]`` attributions (via :func:`dance.to_heatmap`).
        masks: ``[B, H, W]`` (or ``[B, 1, H, W]``) bool object masks (:func:`box_mask` for boxes).
        tolerance: Euclidean distance in pixels within which a maximum near the mask still counts
            (Zhang et al. use 15 at 224x224).

    Returns:
        ``[B]`` float tensor of 1.0 / 0.0 (NaN for an empty mask); the mean is the hit rate.
        **Higher** is better.

    Example:
        >>> import torch
        >>> from dance.metrics import pointing_game
        >>> h = torch.zeros(1, 5, 5); h[0, 0, 4] = 1.0
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool); m[0, 0, 0:2] = True
        >>> pointing_game(h, m).tolist(), pointing_game(h, m, tolerance=3).tolist()
        ([0.0], [1.0])
    """
    h = heatmaps(maps, "maps")
    m = _mask(masks, h.shape).to(h.device)
    tolerance = check_number(tolerance, "tolerance")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    r = int(tolerance)
    area = m
    if r > 0:  # dilate the mask by a disc of radius `tolerance`
        ax = torch.arange(-r, r + 1, device=h.device, dtype=torch.float32)
        disc = ((ax.view(-1, 1) ** 2 + ax.view(1, -1) ** 2) <= float(tolerance) ** 2).float()
        area = F.conv2d(m.float().unsqueeze(1), disc.view(1, 1, 2 * r + 1, 2 * r + 1), padding=r)[:, 0] > 0
    peak = h == h.flatten(1).amax(dim=1).view(-1, 1, 1)
    hit = (peak & area).flatten(1).any(dim=1).float()
    return torch.where(m.flatten(1).any(dim=1), hit, torch.full_like(hit, float("nan")))
