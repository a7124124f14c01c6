r"""Sparsity and faithfulness measures of the SCAAT poster (Xu et al., 2023).

The poster reports, per saliency method, *saliency entropy* (lower is better), *saliency size*
in kilobytes (lower is better), :math:`AOPC_{lerf}` (lower is better) and :math:`AOPC_{rel}`
(higher is better), without spelling out the definitions; this module fixes them as follows.

* :func:`saliency_entropy`: Shannon entropy, in bits, of the grey-level histogram of the
  heatmap quantised to 8 bits (what :func:`skimage.measure.shannon_entropy` computes for an 8-bit
  image); optionally the entropy of the map read as a distribution over pixels (Bhatt et al.'s
  "complexity", Quantus' ``Complexity``).
* :func:`saliency_size`: bytes of the 8-bit grey-scale heatmap compressed as **PNG by Pillow**
  at a fixed ``compress_level`` (9 by default). A sparse, smooth map compresses well.
* :func:`aopc`: area over the perturbation curve (Samek et al., 2017): the mean drop of the
  class probability while the most relevant (MoRF) or least relevant (LeRF) pixels or patches
  are replaced by a baseline value, ``step`` at a time.
* :func:`aopc_rel`: :math:`AOPC_{morf} / AOPC_{lerf}`.
"""
from __future__ import annotations

import io
import math
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import (TargetType, check_batch, check_callable_model, check_choice, check_int, check_maps,
                       check_number, check_positive, evaluating, optional_import, resolve_target)
from ._registry import metric
from ._utils import class_score, forward, heatmaps, unit_heatmaps

_SCAAT = "Xu et al. (2023), SCAAT (poster)"


def to_uint8(maps: torch.Tensor) -> torch.Tensor:
    """Quantise heatmaps in [0, 1] to 8-bit grey levels (round to nearest), ``[B, H, W]`` uint8."""
    h = unit_heatmaps(maps, "maps")
    return torch.round(h * 255.0).to(torch.uint8)


@metric("lower", _SCAAT + "; 8-bit histogram entropy as skimage.measure.shannon_entropy", "xu2023scaat",
        "PCAM / ImageNet-1k; Grad, SmoothGrad, IG maps; reported in the poster's table")
def saliency_entropy(maps: torch.Tensor, *, kind: str = "histogram", base: Optional[float] = None) -> torch.Tensor:
    r"""Entropy of a saliency map: how spread out (or noisy) it is.

    * ``kind="histogram"`` (default): quantise the heatmap to 8 bits (:func:`to_uint8`) and take
      the Shannon entropy :math:`-\sum_v p_v \log_2 p_v` of its 256-bin grey-level histogram; equal
      to :func:`skimage.measure.shannon_entropy` of the 8-bit image. Between 0 (one grey level)
      and 8 bits.
    * ``kind="distribution"``: read the map as a distribution over pixels,
      :math:`p_i = h_i / \sum_j h_j`, and take :math:`-\sum_i p_i \ln p_i` (Bhatt et al., 2020;
      Quantus ``Complexity``). Between 0 (one pixel) and :math:`\ln(HW)` nats.

    Args:
        maps: ``[B, H, W]`` non-negative maps (in [0, 1] for ``"histogram"``) or ``[B, C, H, W]``
            attributions (through :func:`dance.to_heatmap`).
        kind: ``"histogram"`` or ``"distribution"``.
        base: logarithm base; default 2 (bits) for ``"histogram"`` and e (nats) for ``"distribution"``.

    Returns:
        ``[B]`` float64 tensor. **Lower** is better (a sparser map). A map with no mass has
        distribution entropy 0.

    Example:
        >>> import torch
        >>> from dance.metrics import saliency_entropy
        >>> half = torch.zeros(1, 4, 4); half[0, :2] = 1.0       # two grey levels, half each
        >>> saliency_entropy(half).tolist()
        [1.0]
    """
    check_choice(kind, "kind", ("histogram", "distribution"))
    if base is not None:
        base = check_positive(base, "base")
        if base == 1.0:
            raise ValueError("base must be a positive number other than 1 (the base of the logarithm), got 1")
    if kind == "histogram":
        q = to_uint8(maps).flatten(1).long()
        counts = torch.zeros(q.shape[0], 256, dtype=torch.float64, device=q.device)
        counts.scatter_add_(1, q, torch.ones_like(q, dtype=torch.float64))
        p = counts / q.shape[1]
        log_base = math.log(2.0 if base is None else float(base))
    elif kind == "distribution":
        h = heatmaps(maps, "maps").flatten(1).to(torch.float64)  # any non-negative scale
        total = h.sum(dim=1, keepdim=True)
        p = h / torch.where(total > 0, total, torch.ones_like(total))
        log_base = 1.0 if base is None else math.log(float(base))
    else:
        raise ValueError(f"kind must be 'histogram' or 'distribution', got {kind!r}")
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    return -plogp.sum(dim=1) / log_base


@metric("lower", _SCAAT + "; PNG via Pillow at a fixed compress_level", "xu2023scaat",
        "reported in kilobytes in the poster; codec not stated there")
def saliency_size(maps: torch.Tensor, *, compress_level: int = 9) -> torch.Tensor:
    """Size in bytes of each heatmap stored as an 8-bit grey-scale PNG (Pillow, ``mode="L"``).

    The codec is fixed (PNG, deflate at ``compress_level``, no ``optimize`` pass) so sizes are
    comparable between methods; the PNG header and chunk overhead (tens of bytes) are included.
    The maps go to the CPU for Pillow; the result is returned on their device.

    Args:
        maps: ``[B, H, W]`` heatmaps in [0, 1] or ``[B, C, H, W]`` attributions (through
            :func:`dance.to_heatmap`).
        compress_level: zlib level 0-9 passed to Pillow (default 9, the smallest files).

    Returns:
        ``[B]`` int64 tensor of byte counts. **Lower** is better (a simpler map).

    Example:
        >>> import torch
        >>> from dance.metrics import saliency_size
        >>> flat, noisy = torch.zeros(1, 64, 64), torch.rand(1, 64, 64)
        >>> bool(saliency_size(flat) < saliency_size(noisy))
        True
    """
    Image = optional_import("PIL.Image", package="Pillow", needed_by="dance.metrics.saliency_size")

    check_int(compress_level, "compress_level", 0, 9)
    q = to_uint8(maps)
    sizes = []
    for img in q.cpu().numpy():
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img), mode="L").save(buf, format="PNG", compress_level=compress_level)
        sizes.append(buf.tell())
    return torch.tensor(sizes, dtype=torch.int64, device=q.device)


def _pixel_saliency(attributions: torch.Tensor, shape) -> torch.Tensor:
    if not isinstance(attributions, torch.Tensor):
        raise TypeError(f"attributions must be a torch.Tensor, got {type(attributions).__name__}")
    attributions = check_maps(attributions, "attributions")
    if attributions.dim() == 4:
        s = attributions.detach().abs().amax(dim=1)  # the heatmap's order, before winsorising
    elif attributions.dim() == 3:
        s = attributions.detach()
    else:
        raise ValueError(f"attributions must be [B, C, H, W] or [B, H, W], got {tuple(attributions.shape)}")
    if tuple(s.shape) != (shape[0],) + tuple(shape[2:]):
        raise ValueError(f"attributions must give one [H, W] map per image of inputs {tuple(shape)}, "
                         f"got {tuple(attributions.shape)}")
    return s.float()


def aopc(model: Callable, inputs: torch.Tensor, attributions: torch.Tensor, target: TargetType = None, *,
         order: str = "morf", patch_size: int = 1, step: Optional[int] = None, n_steps: int = 20,
         baseline: Union[float, torch.Tensor] = 0.0, output: str = "prob",
         batch_size: Optional[int] = 256) -> torch.Tensor:
    r"""Area over the perturbation curve, :math:`\frac{1}{L+1}\sum_{k=0}^{L} f(x) - f(x^{(k)})`.

    :math:`x^{(k)}` is the input with the ``k * step`` most relevant (``order="morf"``) or least
    relevant (``order="lerf"``) patches replaced by ``baseline`` (all channels of a pixel
    together); :math:`x^{(0)} = x`, so the :math:`k = 0` term is zero, and :math:`L` = ``n_steps``.
    Relevance of a pixel is :math:`\max_c |E_c|` (the heatmap's ordering, without winsorising);
    of a patch, the mean over its pixels. Ties are broken by patch order (row-major).

    Args:
        model: classifier returning logits (run in eval mode, its flags restored; left unchanged).
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, C, H, W]`` attributions or ``[B, H, W]`` maps.
        target: class ``c`` whose score ``f = F^c`` is followed; None = the predicted class.
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        patch_size: side of the square patches removed together (the last row/column of
            patches is cut at the image border when the side does not divide H or W).
        step: patches removed per step; default 1 % of the patches (at least 1).
        n_steps: :math:`L`, the number of removal steps (``n_steps * step`` must not exceed the
            number of patches).
        baseline: replacement value: a float (default 0, black in [0, 1] pixel space) or a
            tensor broadcastable to ``inputs`` (e.g. a per-channel mean ``[1, C, 1, 1]``).
        output: ``"prob"`` (softmax probability, default), ``"logit"`` or ``"log_prob"``.
        batch_size: images per forward pass.

    Returns:
        ``[B]`` float tensor. For MoRF **higher** is better (removing what the map calls important
        hurts); for LeRF **lower** is better (removing what it calls unimportant does not).

    Example:
        >>> import torch
        >>> from dance.metrics import aopc
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> aopc(model, x, torch.rand(2, 1, 4, 4), order="morf", step=2, n_steps=4).shape
        torch.Size([2])
    """
    check_callable_model(model)
    x = check_batch(inputs, model)
    check_choice(order, "order", ("morf", "lerf"))
    check_choice(output, "output", ("logit", "prob", "log_prob"))
    check_int(patch_size, "patch_size")
    check_int(n_steps, "n_steps")
    if batch_size is not None:
        check_int(batch_size, "batch_size")
    b, _, height, width = x.shape
    s = _pixel_saliency(attributions, x.shape).to(x.device)
    ph, pw = math.ceil(height / patch_size), math.ceil(width / patch_size)
    n_patches = ph * pw
    if step is None:
        step = max(1, math.ceil(0.01 * n_patches))
    check_int(step, "step")
    if step * n_steps > n_patches:
        raise ValueError(f"step * n_steps = {step * n_steps} exceeds the {n_patches} patches of the image; "
                         f"lower step or n_steps")
    if isinstance(baseline, torch.Tensor):
        base = check_maps(baseline, "baseline").to(dtype=x.dtype, device=x.device)
    else:
        base = torch.tensor(check_number(baseline, "baseline"), dtype=x.dtype, device=x.device)
    try:
        base = torch.broadcast_to(base, x.shape)
    except RuntimeError:
        raise ValueError(f"baseline must be a float or broadcastable to inputs {tuple(x.shape)}, "
                         f"got shape {tuple(base.shape)}") from None

    patch_s = F.avg_pool2d(s.unsqueeze(1), patch_size, stride=patch_size, ceil_mode=True).flatten(1)
    ranking = torch.argsort(patch_s, dim=1, descending=(order == "morf"), stable=True)
    position = torch.empty_like(ranking).scatter_(1, ranking, torch.arange(n_patches, device=x.device).expand(b, -1))

    with evaluating(model):
        logits = forward(model, x, batch_size)
        c = resolve_target(logits, target)
        f0 = class_score(logits, c, output)
        drops = []
        for k in range(1, n_steps + 1):  # one batch of B images per step
            removed = (position < k * step).view(b, 1, ph, pw).to(x.dtype)
            removed = removed.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)[:, :, :height, :width]
            x_k = torch.where(removed > 0, base, x)
            drops.append(f0 - class_score(forward(model, x_k, batch_size), c, output))
    return torch.stack(drops, dim=1).sum(dim=1) / (n_steps + 1)


_AOPC_SETTINGS = "not stated in the poster; defaults here: pixels set to 0, 1 % of them per step, 20 steps"


@metric("higher", "Samek et al. (2017) AOPC with most-relevant-first removal, as in " + _SCAAT, "xu2023scaat",
        _AOPC_SETTINGS)
def aopc_morf(model: Callable, inputs: torch.Tensor, attributions: torch.Tensor, target: TargetType = None,
              **aopc_options) -> torch.Tensor:
    """:func:`aopc` with ``order="morf"``. **Higher** is better: removing what the map calls
    important should hurt the prediction. Same arguments as :func:`aopc`; returns ``[B]``."""
    return aopc(model, inputs, attributions, target, order="morf", **aopc_options)


@metric("lower", "Samek et al. (2017) AOPC with least-relevant-first removal, as in " + _SCAAT, "xu2023scaat",
        _AOPC_SETTINGS + "; the poster reports AOPC_lerf in units of 1e-3")
def aopc_lerf(model: Callable, inputs: torch.Tensor, attributions: torch.Tensor, target: TargetType = None,
              **aopc_options) -> torch.Tensor:
    """:func:`aopc` with ``order="lerf"``. **Lower** is better: removing what the map calls
    unimportant should not hurt the prediction. Same arguments as :func:`aopc`; returns ``[B]``."""
    return aopc(model, inputs, attributions, target, order="lerf", **aopc_options)


@metric("higher", "AOPC_rel = AOPC_morf / AOPC_lerf, " + _SCAAT, "xu2023scaat",
        "as for aopc; the poster reports the ratio (e.g. 3.84 for Grad on ImageNet-1k)")
def aopc_rel(model: Callable, inputs: torch.Tensor, attributions: torch.Tensor, target: TargetType = None,
             **aopc_options) -> torch.Tensor:
    r"""Ratio :math:`AOPC_{morf} / AOPC_{lerf}` per image (same settings for both orders).

    A per-image ratio explodes when :math:`AOPC_{lerf}` is near 0 and changes sign when it is
    negative; for a data set, prefer the ratio of the means,
    ``aopc(..., order="morf").mean() / aopc(..., order="lerf").mean()``.

    Args:
        model, inputs, attributions, target: as for :func:`aopc`.
        **aopc_options: any other keyword of :func:`aopc` except ``order``.

    Returns:
        ``[B]`` float tensor. **Higher** is better.
    """
    if "order" in aopc_options:
        raise TypeError("aopc_rel computes both orders itself; do not pass order")
    morf = aopc_morf(model, inputs, attributions, target, **aopc_options)
    lerf = aopc_lerf(model, inputs, attributions, target, **aopc_options)
    return morf / lerf
