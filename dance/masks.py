"""The default family of patch masks, and how far apart patches must be to share one decoy.

A decoy changes the image only inside its mask. The paper uses one patch per mask, so an
``H x W`` image needs about ``(H / stride)^2`` masks (tens of thousands at 224 x 224 with
stride 1). A patch changes only the activations in its *footprint* at layer ``l`` (the layer
cells whose receptive field touches it). Patches whose footprints are disjoint cannot interact
through ``F_l``: the L-inf constraint on their union is the same as on each of them. So one mask
can carry every patch of a sparse lattice, and ``k^2`` lattice masks (``k`` = spacing in grid
steps) cover the image with ``2 k^2`` decoys, whatever the image size.

The footprint is measured, not derived from layer arithmetic: NaN placed in a patch propagates
through convolution, ReLU, pooling and batch norm exactly to the cells that depend on it.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ._layers import LayerProbe


def patch_starts(size: int, patch_size: int, stride: int) -> List[int]:
    """Top-left coordinates of patches along one axis; the last patch is moved inward to cover the edge."""
    starts = list(range(0, size - patch_size + 1, stride))
    if starts[-1] != size - patch_size:
        starts.append(size - patch_size)
    return starts


def _footprints(probe: LayerProbe, base: torch.Tensor, boxes: List[List[Tuple[int, int]]], patch_size: int):
    """Spatial footprint (bool ``[K, ...]``) at the layer of each set of patches (top-left corners)."""
    images = base.repeat(len(boxes), 1, 1, 1)
    for i, corners in enumerate(boxes):
        for (r, c) in corners:
            images[i, :, r:r + patch_size, c:c + patch_size] = float("nan")
    with torch.no_grad():
        out = probe(images)
    nan = torch.isnan(out)
    # Spatial layers ([K, C, h, w]) have a footprint per position; anything else is one vector.
    return nan.any(dim=1) if nan.dim() == 4 else nan.flatten(1)


def interaction_spacing(probe: LayerProbe, image: torch.Tensor, patch_size: int, stride: int,
                        max_probe: int = 64, chunk: int = 16) -> Tuple[int, int]:
    """Smallest lattice spacing ``(k_rows, k_cols)``, in grid steps, at which patches do not interact at the layer.

    The footprints of single patches at a few neighbouring anchors (several alignments, since
    the layer may be strided) and at up to ``max_probe`` grid steps beyond them are measured
    in batches; ``k`` is the smallest step at which every anchor's footprint is disjoint from
    the footprint ``k`` steps further. (NaN marks exactly the cells that depend on a patch, so
    the footprint of two patches is the union of theirs.) If no such ``k`` fits in the image
    along an axis, the spacing is the number of grid positions there: one patch per mask.
    """
    _, _, H, W = image.shape
    base = image[:1].detach().clone()
    result = []
    for axis, size in ((0, H), (1, W)):
        starts = patch_starts(size, patch_size, stride)
        n = len(starts)
        other = patch_starts(W if axis == 0 else H, patch_size, stride)
        fixed = other[len(other) // 2]
        first = n // 4 if n > 8 else 0
        anchors = list(range(first, min(first + 4, n)))
        last = min(n - 1, first + 3 + max_probe)
        positions = list(range(first, last + 1))
        corners = [[(starts[p], fixed) if axis == 0 else (fixed, starts[p])] for p in positions]
        prints = None
        spacing = n
        for k in range(1, n):
            pairs = [(a - first, a + k - first) for a in anchors if a + k <= last]
            if not pairs:
                break
            need = max(j for _, j in pairs) + 1
            # Measure footprints lazily, a chunk at a time: most layers need only the first chunk.
            while prints is None or prints.shape[0] < need:
                done = 0 if prints is None else prints.shape[0]
                new = _footprints(probe, base, corners[done:done + chunk], patch_size).flatten(1)
                prints = new if prints is None else torch.cat([prints, new])
            if all(not bool((prints[i] & prints[j]).any()) for i, j in pairs):
                spacing = k
                break
        result.append(spacing)
    return result[0], result[1]


def lattice_masks(height: int, width: int, patch_size: int, stride: int,
                  spacing: Tuple[int, int] = (1_000_000, 1_000_000)) -> torch.Tensor:
    """Masks ``[M, 1, H, W]`` (bool): patch grid positions grouped into lattices ``spacing`` grid steps apart.

    With ``spacing`` at least the number of grid positions, every mask holds a single patch
    (the paper's construction). The union of all masks is the whole image.
    """
    rows = patch_starts(height, patch_size, stride)
    cols = patch_starts(width, patch_size, stride)
    kr, kc = min(spacing[0], len(rows)), min(spacing[1], len(cols))
    masks = torch.zeros(kr * kc, 1, height, width, dtype=torch.bool)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            masks[(i % kr) * kc + (j % kc), 0, r:r + patch_size, c:c + patch_size] = True
    return masks


def default_masks(probe: Optional[LayerProbe], image: torch.Tensor, patch_size: int = 3,
                  stride: Optional[int] = None, spacing="auto") -> torch.Tensor:
    """The default mask family for ``image`` ``[1, C, H, W]`` at the probed layer.

    Args:
        probe: evaluates the model up to the decoy layer (needed for ``spacing="auto"``).
        patch_size: side of each square patch (paper: 3, the VGG receptive field of one conv).
        stride: step of the patch grid; ``None`` tiles without overlap (``stride = patch_size``);
            the paper uses 1.
        spacing: ``"auto"`` (measure the non-interaction spacing at the layer), an int ``k``
            (patches ``k`` grid steps apart share a mask), or ``None`` (one patch per mask).

    Returns:
        Bool masks ``[M, 1, H, W]`` whose union covers every pixel.
    """
    _, _, H, W = image.shape
    stride = patch_size if stride is None else stride
    if spacing is None:
        k = (1_000_000, 1_000_000)
    elif spacing == "auto":
        k = interaction_spacing(probe, image, patch_size, stride)
    else:
        k = (int(spacing), int(spacing))
    return lattice_masks(H, W, patch_size, stride, k)
