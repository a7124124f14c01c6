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

import itertools
import math
from typing import List, Optional, Tuple

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .layers import LayerProbe


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
    (the paper's construction). The union of all masks is the whole image. When the grid does
    not end on the image edge, the extra edge patch (moved inward, see :func:`patch_starts`)
    joins the mask of its overlapping neighbour: in any other mask it would sit closer than
    ``spacing`` steps to that mask's last patch, and their footprints could overlap.
    """
    rows = patch_starts(height, patch_size, stride)
    cols = patch_starts(width, patch_size, stride)
    kr, kc = min(spacing[0], len(rows)), min(spacing[1], len(cols))

    def lattice_index(i: int, starts: List[int], size: int, k: int) -> int:
        regular = len(range(0, size - patch_size + 1, stride))
        if k < len(starts) and i >= regular:
            i = regular - 1
        return i % k

    masks = torch.zeros(kr * kc, 1, height, width, dtype=torch.bool)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            mi = lattice_index(i, rows, height, kr) * kc + lattice_index(j, cols, width, kc)
            masks[mi, 0, r:r + patch_size, c:c + patch_size] = True
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


def mask_groups(masks: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Split every mask into its connected pieces (8-connectivity): the patches of a lattice mask.

    Args:
        masks: bool ``[M, 1, H, W]``.

    Returns:
        ``(groups, counts)``: ``groups`` long ``[M, H, W]`` with the piece index (0, 1, ...) of each
        masked pixel and -1 elsewhere; ``counts`` long ``[M]``, the number of pieces per mask.
    """
    m = masks[:, 0].detach().cpu().numpy().astype(bool)
    # One call labels all masks: the structure connects pixels within a mask, never across masks.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, _ = ndimage.label(m, structure=structure)
    labels = torch.from_numpy(labels.astype(np.int64))
    M = labels.shape[0]
    flat = labels.view(M, -1)
    # Renumber each mask's pieces 0..k-1 (ndimage numbers them globally, in scan order).
    first = torch.where(flat > 0, flat, torch.full_like(flat, torch.iinfo(torch.int64).max)).amin(dim=1)
    last = flat.amax(dim=1)
    counts = torch.where(last > 0, last - first + 1, torch.zeros_like(last))
    groups = torch.where(flat > 0, flat - first[:, None], torch.full_like(flat, -1))
    return groups.view_as(labels).to(masks.device), counts.to(masks.device)


def code_bits(n: int) -> int:
    """Bits of the constant-weight codes that tell ``n`` pieces apart: the NaN images
    :func:`group_footprints` evaluates for a mask of ``n`` pieces (0 for a single piece)."""
    if n <= 1:
        return 0
    bits = 1
    while math.comb(bits, bits // 2) < n:
        bits += 1
    return bits


def _constant_weight_codes(n: int) -> Tuple[int, int, torch.Tensor]:
    """``n`` distinct binary codes of equal weight: ``(bits, weight, codes [n, bits] bool)``.

    The union of the codes of two or more distinct pieces has more ones than ``weight``, which is
    how a layer cell that depends on several pieces is recognised.
    """
    bits = max(1, code_bits(n))
    weight = bits // 2
    codes = torch.zeros(n, bits, dtype=torch.bool)
    for i, ones in zip(range(n), itertools.combinations(range(bits), weight)):
        codes[i, list(ones)] = True
    return bits, weight, codes


def layer_cells(out: torch.Tensor) -> torch.Tensor:
    """A layer output ``[N, C, *spatial]`` viewed as cells ``[N, C, cells]`` (spatial positions);
    outputs without spatial axes (``[N, K]``) have one cell per unit."""
    if out.dim() >= 3:
        return out.flatten(2)
    return out.reshape(out.shape[0], 1, -1)


def group_footprints(probe: LayerProbe, image: torch.Tensor, groups: torch.Tensor, counts: torch.Tensor,
                     chunk: int = 32) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which piece of each mask every layer cell depends on, measured by NaN propagation.

    Each piece of a mask gets a distinct constant-weight binary code; for each code bit one image
    holds NaN in the pieces whose code has that bit set. A cell that depends on exactly one piece
    turns NaN in exactly that piece's bits; a cell that turns NaN in more bits depends on several
    pieces; those pieces are merged into one group (conservatively: with every piece whose code
    fits inside the cell's pattern). Masks of a single piece need no measurement.

    Args:
        probe: evaluates the model up to the layer.
        image: ``[1, C, H, W]`` any image of the right shape (NaN propagation ignores values).
        groups, counts: from :func:`mask_groups`.

    Returns:
        ``(groups, counts, cells)``: ``groups``/``counts`` with merged masks updated, and
        ``cells`` int32 ``[M, n_cells]``: the group of each cell (-1 = depends on no masked pixel),
        or an empty tensor ``[M, 0]`` when every mask is a single group.
    """
    groups, counts = groups.clone(), counts.clone()
    M = groups.shape[0]
    multi = (counts > 1).nonzero().flatten().tolist()
    if not multi:
        return groups, counts, torch.empty(M, 0, dtype=torch.int32, device=groups.device)
    base = image[:1].detach()
    # Queue (mask, bit) NaN images; build and evaluate them a chunk at a time.
    jobs, plans = [], {}
    for i in multi:
        bits, weight, codes = _constant_weight_codes(int(counts[i]))
        plans[i] = (bits, weight, codes.to(groups.device))
        jobs.extend((i, b) for b in range(bits))
    nan_bits = {}
    for lo in range(0, len(jobs), chunk):
        batch = jobs[lo:lo + chunk]
        images = base.repeat(len(batch), 1, 1, 1)
        for n, (i, b) in enumerate(batch):
            g = groups[i]
            on = (g >= 0) & plans[i][2][g.clamp_min(0), b]
            images[n, :, on] = float("nan")
        with torch.no_grad():
            marked = torch.isnan(layer_cells(probe(images))).any(dim=1)
        for n, (i, b) in enumerate(batch):
            nan_bits.setdefault(i, []).append(marked[n])
    n_cells = next(iter(nan_bits.values()))[0].numel()
    cells = torch.full((M, n_cells), -1, dtype=torch.int32, device=groups.device)
    for i in multi:
        bits, weight, codes = plans[i]
        hit = torch.stack(nan_bits[i])  # [bits, n_cells]
        count = hit.sum(dim=0)
        value = (hit.long() << torch.arange(bits, device=hit.device)[:, None]).sum(dim=0)
        code_values = (codes.long() << torch.arange(bits, device=hit.device)).sum(dim=1)
        order = code_values.argsort()
        sorted_values = code_values[order]
        pos = torch.searchsorted(sorted_values, value).clamp_max(len(sorted_values) - 1)
        known = sorted_values[pos] == value
        touched = count > 0
        clash = touched & ((count != weight) | ~known)
        label = torch.where(touched & ~clash, order[pos], torch.full_like(pos, -1))
        if bool(clash.any()):
            # Some cells depend on several pieces. The pieces whose codes fit inside such a cell's
            # NaN pattern include every piece it depends on; merge them (connected components of
            # the cell-piece graph), so that interacting pieces share one step. Conservative.
            values = value[clash].unique()
            fits = (code_values[None, :] & ~values[:, None]) == 0  # [n_values, pieces]
            if not bool(fits.any(dim=1).all()):
                fits = torch.ones_like(fits)  # a pattern no piece explains: merge the whole mask
            n_pieces = code_values.numel()
            v_idx, p_idx = fits.nonzero(as_tuple=True)
            graph = coo_matrix((np.ones(len(v_idx)), (p_idx.cpu().numpy(), n_pieces + v_idx.cpu().numpy())),
                               shape=(n_pieces + len(values),) * 2)
            _, comp = connected_components(graph, directed=False)
            comp = torch.from_numpy(comp).to(groups.device)
            # Renumber the merged groups 0..k-1 by first piece.
            _, new_ids = torch.unique(comp[:n_pieces], return_inverse=True)
            value_group = new_ids[fits.int().argmax(dim=1)]
            label = torch.where(label >= 0, new_ids[label.clamp_min(0)], label)
            label[clash] = value_group[torch.searchsorted(values, value[clash])]
            g = groups[i]
            groups[i] = torch.where(g >= 0, new_ids[g.clamp_min(0)], g)
            counts[i] = int(new_ids.max()) + 1
        cells[i] = label.to(torch.int32)
    return groups, counts, cells
