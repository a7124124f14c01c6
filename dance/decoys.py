"""Decoy generation (paper §3.1 and §3.4): batched, constrained, reproducible.

A decoy of ``x`` at layer ``l`` is an image that differs from ``x`` only inside a patch mask
``M``, moves as far as possible in direction ``s`` there, and keeps the layer's activations
within ``epsilon`` of the original (paper Eq. 2):

    maximise ||((x~ - x) * s)^+||_1   s.t.  ||F_l(x~) - F_l(x)||_inf <= epsilon,
                                            (x~ - x) * (1 - M) = 0,  x~ in [0, 1].

It is solved as in §3.4: the constraint becomes the penalty of Eq. 8,
``c * ||(|F_l(x~) - F_l(x)| - tau)^+||_2^2``; ``tau`` starts at ``tau * epsilon`` and shrinks by
``tau_decay`` after every step whose penalty is zero; ``c`` doubles for decoys that found no
feasible point and their optimisation restarts; pixels are parametrised as
``x~ = (tanh(w) + 1) / 2`` (Carlini & Wagner; the paper's Eq. 7 writes the inverse map by
mistake); ``x`` is restored outside the mask after every step. All decoys of all images are
optimised together in one batched loop with a per-decoy Adam, and a decoy whose best feasible
movement stops improving is frozen (early stop). The forward pass stops at layer ``l``.
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ._checks import check_images, check_int, check_model, check_positive
from ._layers import LayerProbe, eval_mode, resolve_layer
from .masks import default_masks

# Tolerance kept below epsilon when a decoy is accepted, so that recomputing F_l in another
# batch composition (different float summation order) cannot push it over epsilon.
_FEASIBILITY_MARGIN = 1e-4
# Initial step in the decoy's direction: (.)^+ has zero gradient at exactly x~ = x.
_INIT_STEP = 1e-3
_PIXEL_CLAMP = 1e-3


@dataclass
class Decoys:
    """The valid decoys of one image.

    Attributes:
        images: ``[N, C, H, W]`` decoy images in [0, 1].
        masks: ``[N, 1, H, W]`` bool; each decoy equals ``original`` exactly outside its mask.
        signs: ``[N]`` long, +1 (pushed up) or -1 (pushed down).
        deviation: ``[N]`` achieved ``||F_l(decoy) - F_l(x)||_inf`` (each ``<= epsilon``).
        movement: ``[N]`` the objective ``||((decoy - x) * s)^+||_1``.
        epsilon: the absolute tolerance used (activation units of the layer).
        layer: the layer's name in ``model.named_modules()``.
        original: ``[1, C, H, W]`` the image the decoys belong to.
        dropped: how many (mask, sign) pairs could not be brought under epsilon and were removed.
        dropped_masks, dropped_signs: those pairs, for inspection.
    """

    images: torch.Tensor
    masks: torch.Tensor
    signs: torch.Tensor
    deviation: torch.Tensor
    movement: torch.Tensor
    epsilon: float
    layer: str
    original: torch.Tensor
    dropped: int = 0
    dropped_masks: Optional[torch.Tensor] = None
    dropped_signs: Optional[torch.Tensor] = None
    steps_run: int = 0
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device) -> "Decoys":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Decoys(move(self.images), move(self.masks), move(self.signs), move(self.deviation),
                      move(self.movement), self.epsilon, self.layer, move(self.original), self.dropped,
                      move(self.dropped_masks), move(self.dropped_signs), self.steps_run, dict(self.extra))


# Footprint spacing is structural (NaN propagation ignores weight values), so it is cached per
# model, layer, image shape and patch grid.
_SPACING_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def _mask_family(model, probe, name, image, patch_size, stride, spacing):
    if spacing != "auto":
        return default_masks(probe, image, patch_size, stride, spacing)
    key = (name, tuple(image.shape[1:]), patch_size, stride, image.device.type)
    per_model = _SPACING_CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = default_masks(probe, image, patch_size, stride, "auto").cpu()
    return per_model[key].to(image.device)


def _check_masks(masks, height: int, width: int) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a tensor of shape [N, 1, H, W], got {type(masks).__name__}")
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[2:] != (height, width) or masks.shape[0] == 0:
        raise ValueError(
            f"masks must have shape [N, 1, {height}, {width}] (or [N, {height}, {width}]) with N >= 1, "
            f"got {tuple(masks.shape)}"
        )
    if masks.dtype != torch.bool:
        if not bool(((masks == 0) | (masks == 1)).all()):
            raise ValueError("masks must be boolean or hold only 0 and 1")
        masks = masks != 0
    uncovered = int((~masks.any(dim=0)).sum())
    if uncovered:
        raise ValueError(
            f"masks leave {uncovered} pixel(s) uncovered; every pixel must lie in at least one mask "
            f"(the decoy-enhanced map needs a decoy population at every pixel)"
        )
    return masks


def _check_directions(directions) -> List[int]:
    try:
        dirs = [int(d) for d in directions]
    except TypeError:
        raise TypeError(f"directions must be a sequence drawn from (1, -1), got {directions!r}") from None
    if not dirs or any(d not in (1, -1) for d in dirs) or len(set(dirs)) != len(dirs):
        raise ValueError(f"directions must be a non-empty sequence of distinct values from (1, -1), got {directions!r}")
    return dirs


def _optimise(probe: LayerProbe, x: torch.Tensor, ref: torch.Tensor, masks: torch.Tensor,
              signs: torch.Tensor, eps: torch.Tensor, *, c: float, tau: float, tau_decay: float,
              steps: int, lr: float, max_doublings: int, patience: int):
    """Optimise decoys for rows ``x [R,C,H,W]`` against ``ref = F_l(x)`` in one batched loop.

    Returns ``(images, deviation, movement, feasible, steps_run)``.
    """
    R = x.shape[0]
    dtype, device = x.dtype, x.device
    m = masks.to(dtype)
    s = signs.to(dtype).view(R, 1, 1, 1)
    start = (x + s * _INIT_STEP).clamp(_PIXEL_CLAMP, 1.0 - _PIXEL_CLAMP)
    w0 = torch.atanh(2.0 * start - 1.0)
    ok_eps = eps * (1.0 - _FEASIBILITY_MARGIN)

    w = w0.clone()
    adam_m = torch.zeros_like(w)
    adam_v = torch.zeros_like(w)
    t_row = torch.zeros(R, device=device, dtype=dtype)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8

    c_row = torch.full((R,), float(c), device=device, dtype=dtype)
    tau0 = eps * float(tau)
    tau_row = tau0.clone()
    best_img = x.clone()
    best_mov = torch.full((R,), -math.inf, device=device, dtype=dtype)
    best_dev = torch.zeros(R, device=device, dtype=dtype)
    since = torch.zeros(R, dtype=torch.long, device=device)
    active = torch.ones(R, dtype=torch.bool, device=device)
    steps_run = 0

    for round_ in range(max_doublings + 1):
        for _ in range(steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            steps_run += 1
            wi = w[idx].requires_grad_(True)
            xi, mi, si = x[idx], m[idx], s[idx]
            img = torch.where(mi > 0, 0.5 * (torch.tanh(wi) + 1.0), xi)
            diff = (probe(img) - ref[idx]).abs().flatten(1)
            dev = diff.amax(dim=1)
            movement = ((img - xi) * si).clamp_min(0.0).flatten(1).sum(dim=1)
            penalty = (diff - tau_row[idx, None]).clamp_min(0.0).pow(2).sum(dim=1)
            loss = (-movement + c_row[idx] * penalty).sum()
            (grad,) = torch.autograd.grad(loss, wi)
            with torch.no_grad():
                # Keep the best feasible iterate seen (before the step).
                mov, dev_d = movement.detach(), dev.detach()
                better = (dev_d <= ok_eps[idx]) & (mov > best_mov[idx] * (1.0 + 1e-4) + 1e-12)
                bi = idx[better]
                best_img[bi] = img.detach()[better]
                best_mov[bi] = mov[better]
                best_dev[bi] = dev_d[better]
                since[idx] += 1
                since[bi] = 0
                # Per-row Adam step (rows restart independently when c doubles).
                grad = grad * mi
                t_row[idx] += 1
                am = beta1 * adam_m[idx] + (1 - beta1) * grad
                av = beta2 * adam_v[idx] + (1 - beta2) * grad * grad
                adam_m[idx], adam_v[idx] = am, av
                bc1 = (1 - beta1 ** t_row[idx]).view(-1, 1, 1, 1)
                bc2 = (1 - beta2 ** t_row[idx]).view(-1, 1, 1, 1)
                w[idx] = wi.detach() - lr * (am / bc1) / ((av / bc2).sqrt() + adam_eps)
                # Paper §3.4: a zero penalty means tau is too loose; tighten it.
                # Our addition: an iterate over epsilon also tightens tau, or a hinge sitting at
                # epsilon would keep the iterate hovering just above it, infeasible.
                tighten = (penalty.detach() == 0) | (dev_d > ok_eps[idx])
                tau_row[idx] = torch.where(tighten, tau_row[idx] * tau_decay, tau_row[idx])
                # Early stop: a decoy whose best feasible movement stalls is frozen.
                stalled = (since[idx] >= patience) & torch.isfinite(best_mov[idx])
                active[idx[stalled]] = False
        failed = ~torch.isfinite(best_mov)
        if not bool(failed.any()) or round_ == max_doublings:
            break
        # Paper §3.4: if the optimisation fails, double c and start again (failed decoys only).
        c_row[failed] *= 2.0
        w[failed] = w0[failed]
        adam_m[failed] = 0
        adam_v[failed] = 0
        t_row[failed] = 0
        tau_row[failed] = tau0[failed]
        since[failed] = 0
        active = failed.clone()

    feasible = torch.isfinite(best_mov)
    best_mov = torch.where(feasible, best_mov, torch.zeros_like(best_mov))
    return best_img, best_dev, best_mov, feasible, steps_run


def _generate(model: nn.Module, images: torch.Tensor, layer, *, epsilon, relative=False, patch_size=3,
              stride=None, spacing="auto", n_masks=None, masks=None, directions=(1, -1), seed=0,
              c=1e4, tau=1.0, tau_decay=0.95, steps=200, lr=0.03, max_doublings=4, patience=20,
              batch_size=None) -> List[Decoys]:
    """Decoys for every image of a checked batch ``images [B, C, H, W]``, optimised together."""
    epsilon = check_positive(epsilon, "epsilon")
    if not isinstance(relative, bool):
        raise TypeError(f"relative must be True or False, got {relative!r}")
    patch_size = check_int(patch_size, "patch_size")
    stride = patch_size if stride is None else check_int(stride, "stride")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    steps = check_int(steps, "steps")
    patience = check_int(patience, "patience")
    max_doublings = check_int(max_doublings, "max_doublings", minimum=0)
    c = check_positive(c, "c")
    tau = check_positive(tau, "tau")
    lr = check_positive(lr, "lr")
    tau_decay = check_positive(tau_decay, "tau_decay")
    if tau_decay > 1.0:
        raise ValueError(f"tau_decay must be in (0, 1], got {tau_decay}")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size")
    if spacing is not None and spacing != "auto":
        spacing = check_int(spacing, "spacing")
    dirs = _check_directions(directions)
    B, C, H, W = images.shape
    if patch_size > min(H, W):
        raise ValueError(f"patch_size={patch_size} is larger than the image ({H}x{W})")
    name, module = resolve_layer(model, layer)
    probe = LayerProbe(model, module, name)
    device = images.device

    with eval_mode(model), torch.no_grad():
        ref = probe(images).detach()
    if relative:
        scale = ref.abs().flatten(1).amax(dim=1)
        if bool((scale == 0).any()):
            raise ValueError(f"relative epsilon needs nonzero activations at layer {name!r}, but "
                             f"max|F_l(x)| is 0 for some image; pass an absolute epsilon instead")
        eps_img = epsilon * scale
    else:
        eps_img = torch.full((B,), epsilon, device=device, dtype=images.dtype)

    if masks is not None:
        family = _check_masks(masks, H, W).to(device)
    else:
        with eval_mode(model):
            family = _mask_family(model, probe, name, images[:1], patch_size, stride, spacing)
    if n_masks is not None:
        n_masks = check_int(n_masks, "n_masks")
        if n_masks < family.shape[0]:
            # A seeded random subset: fewer decoys, at the price of pixels left uncovered.
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(family.shape[0], generator=g)[:n_masks].sort().values
            family = family[keep.to(device)]
    M = family.shape[0]
    sign_t = torch.tensor(dirs, dtype=torch.long, device=device)
    # Rows: image-major, then mask, then direction.
    row_img = torch.arange(B, device=device).repeat_interleave(M * len(dirs))
    row_mask = torch.arange(M, device=device).repeat_interleave(len(dirs)).repeat(B)
    row_sign = sign_t.repeat(B * M)
    R = row_img.numel()
    chunk = R if batch_size is None else batch_size

    out_img = torch.empty(R, C, H, W, dtype=images.dtype, device=device)
    out_dev = torch.empty(R, dtype=images.dtype, device=device)
    out_mov = torch.empty(R, dtype=images.dtype, device=device)
    out_ok = torch.empty(R, dtype=torch.bool, device=device)
    steps_run = 0
    torch.manual_seed(seed)  # nothing below draws random numbers today; kept so future solvers stay seeded
    with eval_mode(model), torch.enable_grad():
        for lo in range(0, R, chunk):
            sl = slice(lo, min(R, lo + chunk))
            ri = row_img[sl]
            res = _optimise(probe, images[ri], ref[ri], family[row_mask[sl]], row_sign[sl], eps_img[ri],
                            c=c, tau=tau, tau_decay=tau_decay, steps=steps, lr=lr,
                            max_doublings=max_doublings, patience=patience)
            out_img[sl], out_dev[sl], out_mov[sl], out_ok[sl], n = res
            steps_run += n
        # The reported deviation is recomputed on the returned images themselves.
        with torch.no_grad():
            for lo in range(0, R, chunk):
                sl = slice(lo, min(R, lo + chunk))
                out_dev[sl] = (probe(out_img[sl]) - ref[row_img[sl]]).abs().flatten(1).amax(dim=1)
    out_ok &= out_dev <= eps_img[row_img]

    result = []
    for b in range(B):
        rows = row_img == b
        keep = rows & out_ok
        drop = rows & ~out_ok
        n_drop = int(drop.sum())
        if n_drop:
            warnings.warn(f"{n_drop} of {int(rows.sum())} decoys of image {b} could not be brought under "
                          f"epsilon={float(eps_img[b]):.4g} at layer {name!r} and were dropped; raise "
                          f"max_doublings or epsilon to keep them", RuntimeWarning, stacklevel=3)
        result.append(Decoys(
            images=out_img[keep], masks=family[row_mask[keep]], signs=row_sign[keep],
            deviation=out_dev[keep], movement=out_mov[keep], epsilon=float(eps_img[b]), layer=name,
            original=images[b:b + 1].clone(), dropped=n_drop,
            dropped_masks=family[row_mask[drop]], dropped_signs=row_sign[drop], steps_run=steps_run,
        ))
    return result


def generate_decoys(model: nn.Module, x: torch.Tensor, layer: Union[str, nn.Module], *, epsilon: float,
                    relative: bool = False, patch_size: int = 3, stride: Optional[int] = None,
                    spacing: Union[str, int, None] = "auto", n_masks: Optional[int] = None,
                    masks: Optional[torch.Tensor] = None, directions: Sequence[int] = (1, -1),
                    seed: int = 0, c: float = 1e4, tau: float = 1.0, tau_decay: float = 0.95,
                    steps: int = 200, lr: float = 0.03, max_doublings: int = 4, patience: int = 20,
                    batch_size: Optional[int] = None) -> Decoys:
    """Optimise the decoys of one image at one layer (paper Eq. 2, solved as in §3.4).

    Args:
        model: the network; evaluated in eval mode (its train/eval flags are restored), never changed.
        x: one image ``[C, H, W]`` or ``[1, C, H, W]``, float, values in [0, 1].
        layer: the decoy layer ``l``: a name from ``model.named_modules()`` or the module itself.
            Only the layers up to it are evaluated while optimising.
        epsilon: tolerance on ``||F_l(decoy) - F_l(x)||_inf`` in the layer's activation units.
        relative: if True, ``epsilon`` is a fraction of ``max|F_l(x)|`` (activation scales differ
            a lot between models and layers; 0.1 is a reasonable start).
        patch_size: side of each square patch (paper: 3).
        stride: step of the patch grid; default ``patch_size`` (patches tile the image); paper: 1.
        spacing: how patches share masks. ``"auto"`` (default): patches far enough apart that
            their footprints at ``l`` are disjoint share one mask, measured for this model and
            layer; an int ``k``: patches ``k`` grid steps apart share a mask; ``None``: one patch
            per mask (the paper's construction; many more decoys).
        n_masks: keep only a seeded random subset of this many masks (fewer decoys; some pixels
            may then be left without decoys).
        masks: explicit masks ``[N, 1, H, W]`` (bool or 0/1) overriding the default family; their
            union must cover every pixel.
        directions: which of s = +1 (up) and s = -1 (down) to optimise; both by default.
        seed: seeds the mask subset; the optimisation itself is deterministic.
        c: initial penalty weight (paper Table A2: 1e4); doubled for decoys that found no
            feasible point, at most ``max_doublings`` times.
        tau: initial hinge threshold of Eq. 8 as a fraction of epsilon; shrunk by ``tau_decay``
            (paper: 0.95) after each step whose penalty is zero.
        steps: Adam steps per round; ``lr``: Adam step size in tanh space.
        patience: a decoy whose best feasible movement has not improved for this many steps is frozen.
        batch_size: decoys optimised at once (bounds memory); default all.

    Returns:
        :class:`Decoys` with ``images [N, C, H, W]``, ``masks [N, 1, H, W]``, ``signs [N]``,
        ``deviation [N]`` (each ``<= epsilon``). With the default masks ``N = 2 k_r k_c``, where
        ``k`` is the non-interaction spacing in grid steps: at a VGG-style layer after two 3x3
        convolutions with 3x3 patches ``k = 3``, so 18 decoys, for a 64x64 and a 224x224 image
        alike (``spacing=None`` gives ``2 * 22 * 22 = 968`` and ``2 * 75 * 75 = 11250``).

    Example:
        >>> import torch, dance
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 2))
        >>> d = dance.generate_decoys(net, torch.rand(3, 16, 16), "1", epsilon=0.05)
        >>> d.images.shape[1:], bool((d.deviation <= 0.05).all())
        (torch.Size([3, 16, 16]), True)
    """
    model = check_model(model)
    x = check_images(x, model, name="x", single=True)
    return _generate(model, x, layer, epsilon=epsilon, relative=relative, patch_size=patch_size,
                     stride=stride, spacing=spacing, n_masks=n_masks, masks=masks, directions=directions,
                     seed=seed, c=c, tau=tau, tau_decay=tau_decay, steps=steps, lr=lr,
                     max_doublings=max_doublings, patience=patience, batch_size=batch_size)[0]
