"""Replacement decoys for ablations: the same masks, filled by blurring, inpainting, noise or a constant.

The paper compares its optimised decoys with patches filled by blurring and by a deep inpainting
model (§4.1, Yu et al. 2018); the poster's control study adds Gaussian noise and constant
mean-pixel patches. The deep inpainting model cannot be loaded offline, so inpainting here is
scikit-image's biharmonic inpainting, a classical method. Each function returns a
:class:`dance.Decoys` that :meth:`dance.DecoyEnhanced.attribute` accepts via ``decoys=``, so any
comparison uses exactly the same masks and aggregation as DANCE itself.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_dtype, check_images, check_model, check_positive, check_seed, optional_import
from .layers import LayerProbe, eval_mode, resolve_layer
from .decoys import Decoys, check_masks

KINDS = ("blur", "inpaint", "noise", "constant")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    # Written out because torchvision (whose gaussian_blur computes the same) is not a dependency of the
    # library, and scipy.ndimage.gaussian_filter(mode="mirror") agrees only to float rounding, on the CPU.
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    xr = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    xr = F.conv2d(xr, k.view(1, 1, 1, -1).repeat(C, 1, 1, 1), groups=C)
    return F.conv2d(xr, k.view(1, 1, -1, 1).repeat(C, 1, 1, 1), groups=C)


def _inpaint(x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    inpaint_biharmonic = optional_import("skimage.restoration", package="scikit-image",
                                         needed_by='dance.baselines.replacement_decoys(kind="inpaint")').inpaint_biharmonic

    img = x[0].permute(1, 2, 0).cpu().double().numpy()
    out = []
    for m in masks[:, 0].cpu().numpy():  # one classical solve per mask; not a hot path
        filled = inpaint_biharmonic(img, m, channel_axis=-1)
        out.append(torch.from_numpy(np.clip(filled, 0.0, 1.0)))
    return torch.stack(out).permute(0, 3, 1, 2).to(x.device, x.dtype)


def replacement_decoys(x: torch.Tensor, masks: torch.Tensor, kind: str = "blur", *,
                       model: Optional[nn.Module] = None, layer: Union[str, nn.Module, None] = None,
                       sigma: float = 2.0, noise_std: float = 0.1, seed: int = 0) -> Decoys:
    """Decoys of one image whose masked pixels are replaced instead of optimised.

    Args:
        x: one image ``[C, H, W]`` or ``[1, C, H, W]`` in [0, 1].
        masks: ``[M, 1, H, W]`` bool masks covering every pixel (e.g. ``dance.generate_decoys(...).masks``
            with its duplicates per direction removed, or :func:`dance.default_masks`).
        kind: ``"blur"`` (Gaussian blur of the image, width ``sigma`` pixels, pasted into the mask),
            ``"inpaint"`` (scikit-image biharmonic inpainting of the masked pixels),
            ``"noise"`` (image plus Gaussian noise of std ``noise_std``, clipped to [0, 1]) or
            ``"constant"`` (every masked pixel set to the image's mean colour).
        model, layer: if given, ``deviation`` reports ``||F_l(decoy) - F_l(x)||_inf`` (else NaN).
        seed: seeds the noise.

    Returns:
        :class:`dance.Decoys` with ``signs`` 0 (no direction) and ``epsilon`` inf (no constraint).
    """
    check_choice(kind, "kind", KINDS)
    sigma = check_positive(sigma, "sigma")
    noise_std = check_positive(noise_std, "noise_std")
    check_seed(seed)
    if model is not None:
        check_model(model)
    if layer is not None and model is None:
        raise TypeError("layer needs model: pass model= to measure the deviation at layer")
    x = check_images(x, model, name="x", single=True)
    if model is not None:
        check_dtype(x, model, name="x")
    masks = check_masks(masks, x.shape[-2], x.shape[-1]).to(x.device)
    M = masks.shape[0]
    if kind == "blur":
        fill = _gaussian_blur(x, sigma).expand(M, -1, -1, -1)
    elif kind == "inpaint":
        fill = _inpaint(x, masks)
    elif kind == "noise":
        g = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn((M,) + tuple(x.shape[1:]), generator=g).to(x.device, x.dtype)
        fill = (x + noise_std * noise).clamp(0.0, 1.0)
    else:
        fill = x.mean(dim=(2, 3), keepdim=True).expand(M, -1, x.shape[2], x.shape[3])
    images = torch.where(masks, fill, x)
    deviation = torch.full((M,), float("nan"), dtype=x.dtype, device=x.device)
    name = ""
    if model is not None and layer is not None:
        name, module = resolve_layer(model, layer)
        probe = LayerProbe(model, module, name)
        with eval_mode(model), torch.no_grad():
            ref = probe(x)
            deviation = (probe(images) - ref).abs().flatten(1).amax(dim=1)
    movement = (images - x).abs().flatten(1).sum(dim=1)
    return Decoys(images=images, masks=masks, signs=torch.zeros(M, dtype=torch.long, device=x.device),
                  deviation=deviation, movement=movement, epsilon=float("inf"), layer=name,
                  original=x.clone(), extra={"kind": kind})
