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

``solver="linesearch"`` is a faster alternative (not the paper's method): the patches of a mask
have disjoint footprints at ``l`` (measured by NaN propagation, :mod:`dance.masks`), so Eq. 2
separates into one scalar problem per patch, the largest uniform step in direction ``s``
that keeps the patch's footprint within ``epsilon``; all patches of all decoys are solved
together by a root search of a few forward-only passes. Either way the returned deviations are
those of the returned images, measured, never predicted.
"""
from __future__ import annotations

import math
import sys
import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Union

import torch
from torch import nn

from ._checks import check_dtype, check_images, check_int, check_model, check_positive, gradients_on, ordinary
from .layers import ImageArgs, LayerProbe, eval_mode, resolve_layer, split_forward_args
from .masks import code_bits, default_masks, group_footprints, mask_groups

# Tolerance kept below epsilon when a decoy is accepted, so that recomputing F_l in another
# batch composition (different float summation order) cannot push it over epsilon.
_FEASIBILITY_MARGIN = 1e-4
# Initial step in the decoy's direction: (.)^+ has zero gradient at exactly x~ = x.
_INIT_STEP = 1e-3
_PIXEL_CLAMP = 1e-3
SOLVERS = ("adam", "linesearch")
# Line search: the probe step that measures each patch's initial slope (1e-2: still in the
# near-linear range, closer to typical roots than 1e-3, so first guesses are better), and the
# cap on evaluations after the probe. Measured on the CI model at rtol=0.05 while tuning: the
# search reached ~97% of its converged movement after 3 evaluations and ~98% after 4; more
# evaluations mostly chase the last patch of a decoy.
_LS_PROBE = 1e-2
_LS_MAX_EVALS = 4
# Family analyses (pieces of each mask, their footprints) are cached only below this many pixels.
_ANALYSIS_CACHE_LIMIT = 1 << 24


#: :attr:`Adam.stop` rules: the book's stall-based early stop, or the paper's stop at the first non-zero penalty.
ADAM_STOPS = ("stall", "first_penalty")


@dataclass(frozen=True)
class Adam:
    """The paper's solver (§3.4): Adam on the penalty of Eq. 8, with the ``tau`` schedule and ``c`` doubling.

    Args:
        c: initial penalty weight (paper Table A2: 1e4); doubled for decoys that found no
            feasible point, at most ``max_doublings`` times.
        tau: initial hinge threshold of Eq. 8 as a fraction of epsilon; shrunk by ``tau_decay``
            (paper: 0.95) after each step whose penalty is zero.
        steps: Adam steps per round; ``lr``: Adam step size in tanh space.
        patience: a decoy whose best feasible movement has not improved for this many steps is frozen.
        stop: when a decoy's optimisation ends. ``"stall"`` (default): after ``steps`` steps, or
            earlier once its best feasible movement stops improving (``patience``).
            ``"first_penalty"``: the paper's literal rule (§3.4, after Eq. 8): tau shrinks while the
            penalty is zero, and the optimisation of a decoy terminates at its first step whose
            penalty is not zero (or after ``steps`` steps); it returns the best feasible iterate seen.

    Example:
        >>> import dance
        >>> dance.Adam(c=1e3).steps
        200
        >>> dance.Adam(stop="first_penalty").stop
        'first_penalty'
    """

    c: float = 1e4
    tau: float = 1.0
    tau_decay: float = 0.95
    steps: int = 200
    lr: float = 0.03
    max_doublings: int = 4
    patience: int = 20
    stop: str = "stall"

    def __post_init__(self):
        if self.stop not in ADAM_STOPS:
            raise ValueError(f"stop must be one of {ADAM_STOPS} (\"stall\": the book's early stop; "
                             f"\"first_penalty\": the paper's literal rule), got {self.stop!r}")
        for name in ("c", "tau", "lr", "tau_decay"):
            object.__setattr__(self, name, check_positive(getattr(self, name), name))
        if self.tau_decay > 1.0:
            raise ValueError(f"tau_decay must be in (0, 1], got {self.tau_decay}")
        for name in ("steps", "patience"):
            object.__setattr__(self, name, check_int(getattr(self, name), name))
        object.__setattr__(self, "max_doublings", check_int(self.max_doublings, "max_doublings", minimum=0))


@dataclass(frozen=True)
class LineSearch:
    """A forward-only solver (not the paper's): the largest feasible uniform step of every patch.

    The patches of a mask have disjoint footprints at the layer, so Eq. 2 separates into one
    scalar problem per patch, solved by a safeguarded root search in a few batched forward
    passes (a shared slope probe plus at most 4; see ``benchmarks/README.md`` for its speed and
    the movement it reaches next to Adam's).

    Args:
        rtol: a patch's search stops once its deviation lies within ``rtol * epsilon`` below
            epsilon, a decoy's once its patches do on average (smaller: a little more movement,
            more passes).

    Example:
        >>> import dance
        >>> dance.LineSearch(rtol=0.1).rtol
        0.1
    """

    rtol: float = 0.2

    def __post_init__(self):
        rtol = check_positive(self.rtol, "rtol")
        if rtol >= 1.0:
            raise ValueError(f"rtol must be in (0, 1), got {rtol}")
        object.__setattr__(self, "rtol", rtol)


#: A decoy solver's settings: :class:`Adam` (the paper's) or :class:`LineSearch`.
Solver = Union[Adam, LineSearch]


def as_solver(solver: Union[str, Solver]) -> Solver:
    """``"adam"`` / ``"linesearch"`` (their default settings) or a solver object, as a solver object."""
    if isinstance(solver, (Adam, LineSearch)):
        return solver
    if isinstance(solver, str):
        if solver == "adam":
            return Adam()
        if solver == "linesearch":
            return LineSearch()
        raise ValueError(f"solver must be one of {SOLVERS} or a dance.Adam / dance.LineSearch, got {solver!r}")
    raise TypeError(f"solver must be 'adam', 'linesearch', dance.Adam(...) or dance.LineSearch(...), "
                    f"got {type(solver).__name__}")


@dataclass(frozen=True)
class DecoyConfig:
    """Everything that defines a decoy population except the image: one validated, frozen object.

    Args:
        epsilon: tolerance on ``||F_l(decoy) - F_l(x)||_inf`` in the layer's activation units.
        relative: if True, ``epsilon`` is a fraction of ``max|F_l(x)|`` (activation scales differ
            a lot between models and layers; 0.1 is a reasonable start).
        patch_size: side of each square patch (paper: 3).
        stride: step of the patch grid; default ``patch_size`` (patches tile the image); paper: 1.
            At most ``patch_size``, so that every pixel lies in a patch.
        spacing: how patches share masks. ``"auto"`` (default): patches far enough apart that
            their footprints at ``l`` are disjoint share one mask, measured for the model and
            layer; an int ``k``: patches ``k`` grid steps apart share a mask; ``None``: one patch
            per mask (the paper's construction; many more decoys).
        n_masks: keep only a seeded random subset of this many masks (fewer decoys; some pixels
            may then be left without decoys).
        directions: which of s = +1 (up) and s = -1 (down) to optimise; both by default.
        seed: seeds the mask subset; the optimisation itself is deterministic.
        batch_size: decoys optimised at once (bounds memory); default all.
        solver: :class:`Adam` (default, the paper's method) or :class:`LineSearch`; the strings
            ``"adam"`` and ``"linesearch"`` stand for their default settings.
        progress: say the estimated time and show a progress bar (tqdm, on stderr) while
            optimising; ``None`` (default) only for calls estimated to be long (see
            :func:`generate_decoys`).

    Example:
        >>> import dance
        >>> cfg = dance.DecoyConfig(epsilon=0.1, relative=True, solver="linesearch")
        >>> cfg.solver
        LineSearch(rtol=0.2)
    """

    epsilon: float
    relative: bool = False
    patch_size: int = 3
    stride: Optional[int] = None
    spacing: Union[str, int, None] = "auto"
    n_masks: Optional[int] = None
    directions: Sequence[int] = (1, -1)
    seed: int = 0
    batch_size: Optional[int] = None
    solver: Union[str, Solver] = "adam"
    progress: Optional[bool] = None

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        set_("epsilon", check_positive(self.epsilon, "epsilon"))
        if not isinstance(self.relative, bool):
            raise TypeError(f"relative must be True or False, got {self.relative!r}")
        set_("patch_size", check_int(self.patch_size, "patch_size"))
        stride = self.patch_size if self.stride is None else check_int(self.stride, "stride")
        if stride > self.patch_size:
            raise ValueError(f"stride={stride} is larger than patch_size={self.patch_size}: pixels between "
                             f"patches would lie in no mask; use stride <= patch_size")
        set_("stride", stride)
        if self.spacing is not None and self.spacing != "auto":
            set_("spacing", check_int(self.spacing, "spacing"))
        if self.n_masks is not None:
            set_("n_masks", check_int(self.n_masks, "n_masks"))
        set_("directions", tuple(_check_directions(self.directions)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        if self.batch_size is not None:
            set_("batch_size", check_int(self.batch_size, "batch_size"))
        set_("solver", as_solver(self.solver))
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(f"progress must be True, False or None, got {self.progress!r}")


def _cell_max(diff: torch.Tensor) -> torch.Tensor:
    """``[N, C, *spatial] -> [N, cells]``: the max over channels at each position (the cells of
    :func:`dance.masks.layer_cells`); outputs without spatial axes keep one cell per unit."""
    return diff.amax(dim=1).flatten(1) if diff.dim() >= 3 else diff.flatten(1)


def _fast_layout(images: torch.Tensor) -> torch.Tensor:
    # oneDNN's CPU convolutions run about twice as fast on channels-last inputs (measured in
    # benchmarks/); values are the same up to float summation order. Other devices: unchanged.
    if images.device.type == "cpu" and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


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


def forget_mask_cache(model: nn.Module) -> None:
    """Forget the mask families and footprint analyses cached for ``model``.

    They depend only on the architecture, so they are kept per model (weakly) and reused by
    later calls; forgetting them makes the next call measure them again (e.g. to time a first call).
    """
    _SPACING_CACHE.pop(model, None)


def _mask_family(model, probe, name, image, patch_size, stride, spacing, cache: bool = True):
    """The default mask family and its cache key (None when it is not cached). Not cached with
    extra forward arguments (they might change which pixels a layer cell depends on)."""
    key = (name, tuple(image.shape[1:]), patch_size, stride, spacing, image.device.type)
    if not cache:
        return default_masks(probe, image, patch_size, stride, spacing), None
    if spacing != "auto":
        return default_masks(probe, image, patch_size, stride, spacing), key
    per_model = _SPACING_CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = default_masks(probe, image, patch_size, stride, "auto").cpu()
    return per_model[key].to(image.device), key


class _FamilyAnalysis:
    """The pieces (patches) of every mask and the layer cells each one reaches, for the line search.

    Structural like the spacing (NaN propagation ignores values), so for a default mask family it
    is measured once per model, layer, image shape and patch grid and cached; families too large
    to hold are analysed chunk by chunk instead.
    """

    def __init__(self, model, probe, image, family, key, subset):
        self.probe, self.image, self.family, self.subset = probe, image, family, subset
        self.full = None
        #: NaN images the analysis still has to evaluate (known before it runs, for the cost
        #: estimate; not counted for families analysed chunk by chunk).
        self.passes = 0
        self._todo = None
        M, _, H, W = family.shape
        if M * H * W > _ANALYSIS_CACHE_LIMIT:
            return
        per_model = _SPACING_CACHE.setdefault(model, {}) if key is not None else {}
        self._store, self._akey = per_model, ("analysis",) + tuple(key or ())
        if self._akey not in per_model:
            self._todo = mask_groups(family)
            self.passes = sum(code_bits(int(n)) for n in self._todo[1])
        else:
            self.full = tuple(t.to(family.device) for t in per_model[self._akey])

    def prepare(self) -> None:
        """Run the (cached) analysis of the whole family, unless it is known already."""
        if self._todo is not None:
            self._store[self._akey] = tuple(t.cpu() for t in self._measure(self.family, self._todo))
            self.full = tuple(t.to(self.family.device) for t in self._store[self._akey])
            self._todo, self.passes = None, 0

    def _measure(self, masks, groups=None):
        pieces, counts = mask_groups(masks) if groups is None else groups
        pieces, counts, cells = group_footprints(self.probe, self.image, pieces.to(torch.int32), counts)
        return pieces.long(), counts, cells.long()

    def rows(self, mask_rows: torch.Tensor):
        """``(pieces [R, H, W] long, n_groups [R], cells [R, n_cells] or None)`` for family rows
        ``mask_rows`` (indices into the family after any ``n_masks`` subset)."""
        index = mask_rows if self.subset is None else self.subset[mask_rows]
        if self.full is not None:
            pieces, counts, cells = (t[index] for t in self.full)
        else:
            unique, inverse = torch.unique(index, return_inverse=True)
            pieces, counts, cells = (t[inverse] for t in self._measure(self.family[unique]))
        cells = None if cells.shape[1] == 0 else cells
        return pieces, counts, cells


def check_masks(masks, height: int, width: int) -> torch.Tensor:
    """``masks`` as a bool ``[N, 1, height, width]`` family whose union covers every pixel (else a clear error)."""
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


def _rowwise(t: torch.Tensor, how: str) -> torch.Tensor:
    """Per-row max or sum over all other dims, in whatever memory layout ``t`` has."""
    dims = tuple(range(1, t.dim()))
    return t.amax(dim=dims) if how == "max" else t.sum(dim=dims)


def _optimise(probe: LayerProbe, x: torch.Tensor, ref: torch.Tensor, masks: torch.Tensor,
              signs: torch.Tensor, eps: torch.Tensor, *, c: float, tau: float, tau_decay: float,
              steps: int, lr: float, max_doublings: int, patience: int, stop: str = "stall", tick=None):
    """Optimise decoys for rows ``x [R,C,H,W]`` against ``ref = F_l(x)`` in one batched loop.

    ``x`` and ``ref`` may also be a single image (batch 1) shared by all rows. While every row is
    active a step works on the whole state in place; once some rows are frozen it works on the
    active rows only (gathered and written back).

    Returns ``(images, deviation, movement, feasible, steps_run)``.
    """
    R = signs.shape[0]
    dtype, device = x.dtype, x.device
    xs = x.expand(R, *x.shape[1:])
    mb = masks.expand(-1, x.shape[1], -1, -1).contiguous()  # bool, no broadcast in the hot loop
    s = signs.to(dtype).view(R, 1, 1, 1)
    start = (xs + s * _INIT_STEP).clamp(_PIXEL_CLAMP, 1.0 - _PIXEL_CLAMP)
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
    best_img = xs.clone()
    best_mov = torch.full((R,), -math.inf, device=device, dtype=dtype)
    best_dev = torch.zeros(R, device=device, dtype=dtype)
    since = torch.zeros(R, dtype=torch.long, device=device)
    active = torch.ones(R, dtype=torch.bool, device=device)
    steps_run = 0
    one_ref = ref.shape[0] == 1 and R > 1
    one_x = x.shape[0] == 1 and R > 1

    for round_ in range(max_doublings + 1):
        for _ in range(steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            steps_run += 1
            if tick is not None:
                tick()
            full = idx.numel() == R
            if full:
                wi, mi, si, am, av = w.detach(), mb, s, adam_m, adam_v
                xi = x if one_x else xs
                ri = ref if one_ref else ref
            else:
                wi, mi, si, am, av = w[idx], mb[idx], s[idx], adam_m[idx], adam_v[idx]
                xi = x if one_x else x[idx]
                ri = ref if one_ref else ref[idx]
            wi = wi.requires_grad_(True)
            img = torch.where(mi, 0.5 * (torch.tanh(wi) + 1.0), xi)
            diff = (probe(_fast_layout(img)) - ri).abs()
            dev = _rowwise(diff, "max")
            movement = _rowwise(((img - xi) * si).clamp_min(0.0), "sum")
            tau_i = tau_row[idx].view(-1, *([1] * (diff.dim() - 1)))
            penalty = _rowwise((diff - tau_i).clamp_min(0.0).pow(2), "sum")
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
                # Per-row Adam step (rows restart independently when c doubles); the mask
                # zeroes the gradient outside it, so those pixels keep x.
                grad = grad.masked_fill_(~mi, 0.0)
                t_row[idx] += 1
                am.mul_(beta1).add_(grad, alpha=1 - beta1)
                av.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bc1 = (1 - beta1 ** t_row[idx]).view(-1, 1, 1, 1)
                bc2 = (1 - beta2 ** t_row[idx]).view(-1, 1, 1, 1)
                step = (am / bc1).div_((av / bc2).sqrt_().add_(adam_eps)).mul_(lr)
                if full:
                    w.sub_(step)
                else:
                    adam_m[idx], adam_v[idx] = am, av
                    w[idx] = wi.detach() - step
                # Paper §3.4: a zero penalty means tau is too loose; tighten it.
                # Our addition: an iterate over epsilon also tightens tau, or a hinge sitting at
                # epsilon would keep the iterate hovering just above it, infeasible.
                tighten = (penalty.detach() == 0) | (dev_d > ok_eps[idx])
                tau_row[idx] = torch.where(tighten, tau_row[idx] * tau_decay, tau_row[idx])
                if stop == "first_penalty":
                    # Paper §3.4, literally: a non-zero penalty terminates the decoy's optimisation.
                    active[idx[penalty.detach() > 0]] = False
                else:
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


def _linesearch(probe: LayerProbe, x: torch.Tensor, ref: torch.Tensor,
                signs: torch.Tensor, eps: torch.Tensor, pieces: torch.Tensor, n_groups: torch.Tensor,
                cells: Optional[torch.Tensor], pair: torch.Tensor, *, rtol: float, max_evals: int):
    """Fast solver: per patch group, the largest feasible uniform step in the decoy's direction.

    Within a mask, the groups (patches) have disjoint footprints at the layer, so one forward pass
    gives every group's own deviation ``d_g(a) = max |F_l(x~) - F_l(x)|`` over its footprint, and
    Eq. 2 separates into one scalar problem per group: the largest ``a`` in [0, 1] with
    ``d_g(a) <= epsilon`` for ``x~ = clip(x + a s)`` on the group. Each is solved by a safeguarded
    root search on ``log d_g`` against ``log a`` (a secant step on a local power law, with
    bisection as fallback) that always keeps a measured feasible step. It is forward-only: no
    backward pass, no penalty weight. The first guess comes from the slope of ``d_g`` at a tiny
    step, measured once per (image, mask) and shared by both directions.

    Args:
        x, ref: per row, as in :func:`_optimise`, or one image (batch 1) shared by all rows.
        signs, eps: per row.
        pieces: long ``[R, H, W]`` group index of each masked pixel (-1 elsewhere).
        n_groups: long ``[R]`` groups per row.
        cells: long ``[R, n_cells]`` group of each layer cell (-1: none), or None (one group).
        pair: long ``[R]`` a representative row with the same image and mask (for the slope).
        rtol: a group stops once its deviation is within ``rtol * epsilon`` below epsilon; a
            row stops once its groups are so on average, in an evaluation where all were feasible.
        max_evals: cap on evaluations after the probe.

    Returns:
        ``(images, deviation, movement, feasible, evaluations, exact)``; ``exact[r]`` says that
        ``deviation[r]`` was measured on exactly ``images[r]`` (else it must be recomputed).
    """
    R = signs.shape[0]
    dtype, device = x.dtype, x.device
    G = max(1, int(n_groups.max()))
    s = signs.to(dtype).view(R, 1, 1, 1)
    ok_eps = eps * (1.0 - _FEASIBILITY_MARGIN)
    target = (ok_eps * (1.0 - rtol / 2.0))[:, None]
    accept = (ok_eps * (1.0 - rtol))[:, None]
    ok = ok_eps[:, None]
    valid = torch.arange(G, device=device)[None, :] < n_groups[:, None]
    # Pixels outside the mask read a last column of zero steps, so they keep x exactly.
    pix = torch.where(pieces >= 0, pieces, G).flatten(1)
    cell_idx = None if cells is None else cells + 1  # column 0 collects cells of no group
    shape = (1,) + tuple(x.shape[2:])
    x = x.contiguous()
    ref = ref.contiguous()
    # One image for all rows (x and ref of batch 1): broadcast instead of copying per row.
    shared = x.shape[0] == 1 and ref.shape[0] == 1

    def group_dev(rows, images):
        # Deviation of every group of each row; cells no group reaches (zero in exact arithmetic)
        # count for every group, so the per-group constraint is never weaker than the whole one.
        # Elementwise work and channel reductions run ~10x faster on contiguous tensors than on
        # channels-last ones on CPU (measured), so the layer output is made contiguous once.
        out = probe(_fast_layout(images)).contiguous()
        out = _cell_max((out - (ref if shared else ref[rows])).abs_())
        if cell_idx is None:
            per = out.amax(dim=1, keepdim=True).expand(-1, G)
        else:
            per = torch.zeros(len(rows), G + 1, device=device, dtype=out.dtype)
            per = per.scatter_reduce(1, cell_idx[rows], out, "amax")
            per = torch.maximum(per[:, 1:], per[:, :1])
        return per.to(dtype), out.amax(dim=1).to(dtype)

    def compose(rows, alpha):
        # x~ = clip(x + a_g s) on group g's pixels; elsewhere x + 0 = x exactly, and x in [0, 1].
        step = torch.gather(torch.nn.functional.pad(alpha * s[rows, 0, 0], (0, 1)), 1, pix[rows])
        return ((x if shared else x[rows]) + step.view(len(rows), *shape)).clamp_(0.0, 1.0)

    with torch.no_grad():
        # Slope at a tiny step, once per (image, mask): |dF| is odd-symmetric to first order.
        reps, rep_of = torch.unique(pair, return_inverse=True)
        xr = x if shared else x[reps]
        probe_img = torch.where((pieces[reps] >= 0).unsqueeze(1), xr + _LS_PROBE, xr)
        d0 = group_dev(reps, probe_img)[0][rep_of]
        a0 = torch.full_like(d0, _LS_PROBE)
        alpha = torch.where(d0 > 0, a0 * target / d0.clamp_min(1e-30), torch.ones_like(d0)).clamp(1e-6, 1.0)
        lo = torch.zeros(R, G, device=device, dtype=dtype)
        dlo = torch.zeros_like(lo)
        hi = torch.ones_like(lo)
        dhi = torch.full_like(lo, math.inf)
        done = ~valid
        exact = torch.zeros(R, dtype=torch.bool, device=device)
        row_dev = torch.zeros(R, device=device, dtype=dtype)
        evaluations = 0
        all_rows = torch.arange(R, device=device)
        for it in range(max_evals):
            active = (~done).any(dim=1)
            rows = active.nonzero().flatten()
            if rows.numel() == 0:
                break
            evaluations += 1
            # State is updated on all rows at once (inactive rows have nothing left to do), which
            # costs fewer small operations than gathering and scattering the active ones.
            if rows.numel() == R:
                per, whole = group_dev(all_rows, compose(all_rows, alpha))
            else:
                per_a, whole_a = group_dev(rows, compose(rows, alpha[rows]))
                per = torch.zeros_like(alpha).index_put_((rows,), per_a)
                whole = row_dev.index_put((rows,), whole_a)
            feas = per <= ok
            todo = ~done
            up, down = todo & feas, todo & ~feas
            lo = torch.where(up, alpha, lo)
            dlo = torch.where(up, per, dlo)
            hi = torch.where(down, alpha, hi)
            dhi = torch.where(down, per, dhi)
            # The image just measured is the returned one if every group kept its step.
            exact = torch.where(active, (feas | ~valid).all(dim=1), exact)
            row_dev = whole
            done = done | (up & ((per >= accept) | (alpha >= 1.0))) | (hi - lo <= 1e-4 * hi)
            # Next step: secant on log d against log a through the bracket ends (the slope probe
            # stands in for the lower end while no feasible step is known), kept inside the bracket.
            bracketed = torch.isfinite(dhi)
            both = bracketed & (lo > 0)
            aL = torch.where(both, lo, a0)
            dL = torch.where(both, dlo, d0)
            aR = torch.where(bracketed, hi, lo)
            dR = torch.where(bracketed, dhi, dlo)
            power = torch.log(dR / dL) / torch.log(aR / aL)
            guess = aL * (target / dL) ** (1.0 / power)
            sane = torch.isfinite(guess) & (power > 0.05) & (dL > 0)
            gap = hi - lo
            high_edge = torch.where(bracketed, hi - 0.02 * gap, torch.ones_like(hi))
            guess = torch.where(sane, torch.minimum(torch.maximum(guess, lo + 0.02 * gap), high_edge), lo + 0.5 * gap)
            if it >= 4 and it % 2 == 0:  # guaranteed progress: bisect every other evaluation
                guess = torch.where(bracketed, lo + 0.5 * gap, guess)
            # A decoy stops once its groups' deviations reach, on average, within rtol of
            # epsilon in an evaluation where all were feasible (so the image just measured is the
            # one returned): the last slow group no longer holds the whole decoy.
            share = torch.where(done, torch.ones_like(dlo), (dlo / target).clamp(max=1.0)) * valid
            enough = exact & (share.sum(dim=1) / valid.sum(dim=1).clamp_min(1) >= 1.0 - rtol)
            done = done | (enough[:, None] & (lo > 0))
            alpha = torch.where(done, lo, guess)
        images = compose(all_rows, lo)
        # Rows still searching when the cap was hit end at their last feasible steps.
        exact &= (lo == alpha).all(dim=1)
        movement = ((images - x) * s).clamp_min(0.0).flatten(1).sum(dim=1)
    feasible = torch.ones(R, dtype=torch.bool, device=device)
    return images, row_dev, movement, feasible, evaluations, exact


#: A call estimated to take longer than this many seconds (on this machine) says so on stderr
#: before it starts, with the estimate, and shows a progress bar while it optimises
#: (``progress=None``, the default; ``progress=False`` silences both, ``True`` always shows them).
PROGRESS_SECONDS = 10.0
#: Images in the batch timed again before a long call is announced (a warm, batched pass).
ESTIMATE_BATCH = 8
#: How long :func:`seconds_per_image` keeps timing (it takes the fastest of its repetitions).
ESTIMATE_SECONDS = 0.2


def seconds_per_image(call: Callable[[torch.Tensor], object], image: torch.Tensor) -> float:
    """Seconds per image of ``call`` on a warm batch of ``ESTIMATE_BATCH`` copies of ``image``
    ``[1, C, H, W]`` (no gradients): the fastest of repetitions over about ``ESTIMATE_SECONDS``
    (at most 10), so that a busy moment of a shared machine or per-call overhead is not taken
    for the pass's cost."""
    batch = image[:1].repeat(ESTIMATE_BATCH, *([1] * (image.dim() - 1)))
    best, spent = math.inf, 0.0
    with torch.no_grad():
        for _ in range(10):
            clock = time.perf_counter()
            call(batch)
            took = time.perf_counter() - clock
            best, spent = min(best, took), spent + took
            if spent >= ESTIMATE_SECONDS:
                break
    return best / ESTIMATE_BATCH


#: The cost of a backward pass through the layers up to ``l``, in forward passes (the usual rule of thumb).
BACKWARD_FORWARDS = 2.0


def _announce(config: DecoyConfig, rows: int, images: torch.Tensor, name: str, solver: str,
              analysis_passes: int, pass_seconds: Callable[[bool], float]) -> Optional[object]:
    """Say what a long optimisation will cost before it starts (stderr) and return its progress
    bar (tqdm), or None for a short one (see ``DecoyConfig.progress``).

    The estimate counts forward passes through the layers up to ``l`` (one image each): the
    one-time mask analysis, and per decoy the line search's probe, evaluations and final
    measurement, or Adam's forward and backward passes per step. ``pass_seconds(False)`` is the
    seconds of one, measured on the call's first pass (which may include one-time warm-up);
    ``pass_seconds(True)`` measures it again (:func:`seconds_per_image`), which is done only
    before announcing a long call (the estimate is rough: a shared machine's load varies).
    """
    if config.progress is False:
        return None
    if solver == "adam":
        cfg = config.solver
        per_step = rows * (1.0 + BACKWARD_FORWARDS)
        max_steps = cfg.steps * (cfg.max_doublings + 1)
        passes = analysis_passes + per_step * cfg.steps
    else:
        passes = analysis_passes + rows * (2 + _LS_MAX_EVALS)
    seconds = pass_seconds(False)
    if config.progress is None and passes * seconds > PROGRESS_SECONDS:
        seconds = pass_seconds(True)
    if config.progress is None and passes * seconds <= PROGRESS_SECONDS:
        return None
    shape = tuple(images.shape[1:])
    head = f"dance: optimising {rows} decoys of {images.shape[0]} image(s) of {shape} at layer {name!r}"
    if solver == "adam":
        msg = (f"{head} with Adam (the paper's solver): about {per_step * seconds:.2g} s per step on this machine, "
               f"about {passes * seconds:.0f} s for {cfg.steps} steps and up to {max_steps} steps (decoys stop "
               f"early once they stop improving); dance.LineSearch() is a much faster solver")
    else:
        once = (f", of which about {analysis_passes * seconds:.0f} s is the one-time analysis of the masks"
                if analysis_passes else "")
        msg = f"{head} with the line search: about {passes * seconds:.0f} s on this machine{once}"
    from tqdm.auto import tqdm

    tqdm.write(msg + " (progress=False hides this)", file=sys.stderr)
    unit = "step" if solver == "adam" else "pass"
    return tqdm(total=None, desc="decoys", unit=unit, file=sys.stderr, leave=False)


def generate_decoys_batch(model: nn.Module, images: torch.Tensor, layer: Union[str, nn.Module],
                          config: DecoyConfig, *, masks: Optional[torch.Tensor] = None,
                          additional_forward_args=None) -> List[Decoys]:
    """The decoys of every image of a batch, optimised together in one batched loop.

    The batched form of :func:`generate_decoys`, for callers that explain many images at once
    (e.g. :class:`dance.DecoyEnhanced`): the same solver, the same guarantees, one
    :class:`Decoys` per image.

    Args:
        model: the network; evaluated in eval mode (its train/eval flags are restored), never changed.
        images: ``[B, C, H, W]`` float images in [0, 1].
        layer: the decoy layer: a name from ``model.named_modules()`` or the module itself.
        config: the :class:`DecoyConfig` (epsilon, masks, solver, ...).
        masks: explicit masks ``[N, 1, H, W]`` (bool or 0/1) overriding the default family; their
            union must cover every pixel.
        additional_forward_args: extra arguments of the model's forward after the images, as in
            Captum: a tensor with one entry per image (first axis ``B``) is given each image's
            entry for all its rows, anything else as it is (``model(x, *args)``).

    Returns:
        list of ``B`` :class:`Decoys`, one per image, in order.

    Example:
        >>> import torch, dance
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 2))
        >>> cfg = dance.DecoyConfig(epsilon=0.05, solver="linesearch")
        >>> [len(d) > 0 for d in dance.generate_decoys_batch(net, torch.rand(2, 3, 16, 16), "1", cfg)]
        [True, True]
    """
    model = check_model(model)
    images = check_images(images, model, name="images")
    check_dtype(images, model, name="images")
    if not isinstance(config, DecoyConfig):
        raise TypeError(f"config must be a dance.DecoyConfig, got {type(config).__name__}")
    with gradients_on():  # the Adam solver needs autograd, also inside the caller's inference_mode
        return _generate(model, ordinary(images), layer, config, masks if not isinstance(masks, torch.Tensor) else ordinary(masks),
                         additional_forward_args)


def _generate(model: nn.Module, images: torch.Tensor, layer, config: DecoyConfig,
              masks: Optional[torch.Tensor] = None, forward_args=None) -> List[Decoys]:
    """Decoys for every image of a checked batch ``images [B, C, H, W]``, each image solved on its own.

    An image's decoys must not depend on the other images of its batch. Solved together, they
    did beyond float rounding: the solver's discrete decisions (feasible or not, a new best
    iterate, a frozen row) flip on the last bit of a forward pass, and those bits depend on the
    batch's composition. So the rows of one image are optimised together, and never with another
    image's rows: the result of ``images[b]`` is bit for bit that of ``images[b:b + 1]`` alone.
    """
    per_image = split_forward_args(forward_args, images.shape[0])
    if images.shape[0] == 1:
        return _generate_together(model, images, layer, config, masks, per_image[0])
    return [d for b in range(images.shape[0])
            for d in _generate_together(model, images[b:b + 1], layer, config, masks, per_image[b])]


def _generate_together(model: nn.Module, images: torch.Tensor, layer, config: DecoyConfig,
                       masks: Optional[torch.Tensor] = None, image_args: Optional[ImageArgs] = None) -> List[Decoys]:
    """Decoys for every image of a checked batch ``images [B, C, H, W]``, optimised together."""
    epsilon, relative, seed = config.epsilon, config.relative, config.seed
    patch_size, stride, spacing, n_masks = config.patch_size, config.stride, config.spacing, config.n_masks
    batch_size, dirs, solver_cfg = config.batch_size, list(config.directions), config.solver
    solver = "adam" if isinstance(solver_cfg, Adam) else "linesearch"
    B, C, H, W = images.shape
    if solver == "adam" and images.dtype in (torch.bfloat16, torch.float16):
        # Adam's steps in tanh space are below the resolution of 16-bit floats near the pixels'
        # values: the decoys barely move (measured: 0.3% of the float32 movement in bfloat16).
        warnings.warn(f"images are {images.dtype}: the Adam solver stalls in 16-bit floats and the decoys barely "
                      f"move; run the model and images in float32 (model.float(), images.float()) or use "
                      f"solver='linesearch'", RuntimeWarning, stacklevel=3)
    if patch_size > min(H, W):
        raise ValueError(f"patch_size={patch_size} is larger than the image ({H}x{W})")
    name, module = resolve_layer(model, layer)
    probe = LayerProbe(model, module, name, image_args)
    device = images.device

    # One eval-mode block for the whole call (entering it walks every module of the model).
    with eval_mode(model):
        with torch.no_grad():
            clock = time.perf_counter()
            ref = probe(_fast_layout(images)).detach()
            first_pass = (time.perf_counter() - clock) / B

        def pass_seconds(again: bool) -> float:
            # Again: a small warm batch, closer to the solver's batched passes than one cold image.
            return min(first_pass, seconds_per_image(lambda b: probe(_fast_layout(b)), images[:1])) if again else first_pass

        if relative:
            scale = ref.abs().flatten(1).amax(dim=1)
            if bool((scale == 0).any()):
                raise ValueError(f"relative epsilon needs nonzero activations at layer {name!r}, but "
                                 f"max|F_l(x)| is 0 for some image; pass an absolute epsilon instead")
            eps_img = epsilon * scale
        else:
            eps_img = torch.full((B,), epsilon, device=device, dtype=images.dtype)

        family_key = None
        if masks is not None:
            family = check_masks(masks, H, W).to(device)
        else:
            family, family_key = _mask_family(model, probe, name, images[:1], patch_size, stride, spacing,
                                              cache=image_args is None)
        subset = None
        if n_masks is not None:
            if n_masks < family.shape[0]:
                # A seeded random subset: fewer decoys, at the price of pixels left uncovered.
                g = torch.Generator().manual_seed(seed)
                subset = torch.randperm(family.shape[0], generator=g)[:n_masks].sort().values.to(device)
        analysis = None
        if solver == "linesearch":
            analysis = _FamilyAnalysis(model, probe, images[:1], family, family_key, subset)
        if subset is not None:
            family = family[subset]
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
        out_exact = torch.zeros(R, dtype=torch.bool, device=device)
        steps_run = 0
        # Nothing here draws random numbers: the solvers are deterministic, and the caller's global
        # RNG is left alone.
        bar = _announce(config, R, images, name, solver, 0 if analysis is None else analysis.passes, pass_seconds)
        if analysis is not None:
            analysis.prepare()
        tick = None if bar is None else (lambda: bar.update(1))
        with torch.enable_grad() if solver == "adam" else torch.no_grad():
            for lo in range(0, R, chunk):
                sl = slice(lo, min(R, lo + chunk))
                ri, rm = row_img[sl], row_mask[sl]
                if solver == "adam":
                    one = B == 1  # every row decoys the same image: pass it once, broadcast
                    res = _optimise(probe, images[:1] if one else images[ri], ref[:1] if one else ref[ri],
                                    family[rm], row_sign[sl], eps_img[ri],
                                    c=solver_cfg.c, tau=solver_cfg.tau, tau_decay=solver_cfg.tau_decay,
                                    steps=solver_cfg.steps, lr=solver_cfg.lr,
                                    max_doublings=solver_cfg.max_doublings, patience=solver_cfg.patience,
                                    stop=solver_cfg.stop, tick=tick)
                    out_img[sl], out_dev[sl], out_mov[sl], out_ok[sl], n = res
                else:
                    pieces, n_groups, cells = analysis.rows(rm)
                    # The slope probe is shared by the rows of one (image, mask): both directions.
                    _, pair_id = torch.unique(ri * M + rm, return_inverse=True)
                    first = torch.full((int(pair_id.max()) + 1,), len(ri), device=device, dtype=torch.long)
                    first = first.scatter_reduce(0, pair_id, torch.arange(len(ri), device=device), "amin")
                    one = B == 1  # every row decoys the same image: pass it once, broadcast
                    res = _linesearch(probe, images[:1] if one else images[ri], ref[:1] if one else ref[ri],
                                      row_sign[sl], eps_img[ri],
                                      pieces, n_groups, cells, first[pair_id], rtol=solver_cfg.rtol,
                                      max_evals=_LS_MAX_EVALS)
                    out_img[sl], out_dev[sl], out_mov[sl], out_ok[sl], n, out_exact[sl] = res
                    n += 1  # the slope probe
                steps_run += n
                if bar is not None and solver != "adam":
                    bar.update(n)
            if bar is not None:
                bar.close()
            # The reported deviation is that of the returned images themselves: recomputed here
            # unless the solver measured exactly these images.
            with torch.no_grad():
                redo = (~out_exact).nonzero().flatten()
                for lo in range(0, redo.numel(), chunk):
                    rr = redo[lo:lo + chunk]
                    out_dev[rr] = (probe(_fast_layout(out_img[rr])) - ref[row_img[rr]]).abs().flatten(1).amax(dim=1)
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
        per = R // B
        # Without drops an image's decoys are a contiguous block of rows: a view, not a copy
        # (the output is the one thing whose memory must grow with the number of decoys).
        kept = out_img[b * per:(b + 1) * per] if n_drop == 0 else out_img[keep]
        result.append(Decoys(
            images=kept, masks=family[row_mask[keep]], signs=row_sign[keep],
            deviation=out_dev[keep], movement=out_mov[keep], epsilon=float(eps_img[b]), layer=name,
            original=images[b:b + 1].clone(), dropped=n_drop,
            dropped_masks=family[row_mask[drop]], dropped_signs=row_sign[drop], steps_run=steps_run,
            extra={"solver": solver},
        ))
    return result


def generate_decoys(model: nn.Module, x: torch.Tensor, layer: Union[str, nn.Module], *, epsilon: float,
                    relative: bool = False, patch_size: int = 3, stride: Optional[int] = None,
                    spacing: Union[str, int, None] = "auto", n_masks: Optional[int] = None,
                    masks: Optional[torch.Tensor] = None, directions: Sequence[int] = (1, -1),
                    seed: int = 0, batch_size: Optional[int] = None, solver: Union[str, Solver] = "adam",
                    progress: Optional[bool] = None, additional_forward_args=None) -> Decoys:
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
        batch_size: decoys optimised at once (bounds memory); default all.
        solver: ``"adam"`` (default): the paper's method (§3.4), or ``dance.Adam(c=..., steps=...)``
            with other settings; ``"linesearch"`` / ``dance.LineSearch(rtol=...)``: a forward-only
            solver that uses the masks' structure, much faster (see :class:`LineSearch`).
        progress: the estimated time and a progress bar on stderr (tqdm); ``None`` (default)
            shows them only when the call is estimated, from its own first forward pass, to take
            longer than ``dance.decoys.PROGRESS_SECONDS`` (10 s) on this machine, e.g. the
            paper's solver on a 224x224 image; ``False`` never, ``True`` always.
        additional_forward_args: extra arguments of the model's forward after the image
            (``model(x, *args)``), as in Captum; a tensor with a first axis of 1 is expanded to
            every decoy. The mask analysis is then not cached.

    Returns:
        :class:`Decoys` with ``images [N, C, H, W]``, ``masks [N, 1, H, W]``, ``signs [N]``,
        ``deviation [N]`` (each ``<= epsilon``), ``steps_run`` (batched passes: optimiser steps,
        or line-search evaluations) and ``extra["solver"]``. With the default masks ``N = 2 k_r k_c``, where
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
    check_dtype(x, model, name="x")
    config = DecoyConfig(epsilon=epsilon, relative=relative, patch_size=patch_size, stride=stride, spacing=spacing,
                         n_masks=n_masks, directions=directions, seed=seed, batch_size=batch_size, solver=solver,
                         progress=progress)
    with gradients_on():  # the Adam solver needs autograd, also inside the caller's inference_mode
        return _generate(model, ordinary(x), layer, config, masks if not isinstance(masks, torch.Tensor) else ordinary(masks),
                         additional_forward_args)[0]


# Added under Adam's square root in :func:`unrolled_decoys`: where a pixel's gradient is zero its
# second moment is zero, and the derivative of sqrt at 0 would turn 0 * inf into NaN.
_UNROLL_SQRT_FLOOR = 1e-20


def unrolled_decoys(model: nn.Module, image: torch.Tensor, decoys: Decoys, steps: int, *,
                    solver: Optional[Adam] = None, create_graph: bool = True) -> torch.Tensor:
    r"""The decoys of ``image`` after ``steps`` *differentiable* Adam steps of the paper's penalty,
    warm-started from ``decoys`` (the decoys of a nearby image): ``[len(decoys), C, H, W]``.

    For the through-the-solver adaptive attack (:func:`dance.attacks.adaptive_attack` with
    ``mode="unrolled"``): the returned decoys are a differentiable function of ``image``
    (``create_graph=True``), through the start point, the reference activations
    :math:`F_l(z)`, the mask composition and every unrolled Adam step. Each step is the one of
    :func:`generate_decoys` with the Adam solver: the loss
    :math:`-\lVert((\tilde x - z)s)^+\rVert_1 + c\,\lVert(\lvert F_l(\tilde x) - F_l(z)\rvert - \tau)^+\rVert_2^2`
    in tanh space, the gradient zeroed outside each decoy's mask, ``z`` kept outside it, Adam with
    the solver's ``lr`` and bias correction, and ``tau`` (starting at ``solver.tau * epsilon``)
    shrunk by ``tau_decay`` after a step whose penalty is zero or whose iterate is over epsilon.

    What differs from the full solver (so these are *approximate* decoys of ``image``):

    * the start: ``clip(image + (decoys.images - decoys.original))`` (the given decoys' offsets
      moved to ``image``), not ``image + s * 1e-3``; with ``steps`` = a few, a cold start would
      leave the decoys next to the image;
    * ``steps`` steps of one round: no ``c`` doubling, no early freezing (``patience``), no stop rule;
    * the *last* iterate is returned, not the best feasible one (that choice is made by comparisons
      and has no useful derivative), so a returned decoy may lie over epsilon and none is dropped;
    * epsilon is ``decoys.epsilon`` (absolute), not recomputed from ``image`` when it was relative;
    * the ``tau`` decisions are constants of the graph (piecewise constant, not differentiated), and
      Adam's square root gets a floor of 1e-20 so that its derivative stays finite where a
      gradient is zero.

    Args:
        model: the network (in the attack: a :func:`dance.attacks.softplus_copy`, whose second
            derivatives do not vanish); must contain the layer ``decoys.layer``.
        image: ``[1, C, H, W]`` (may require grad).
        decoys: the warm start, a :class:`Decoys` of an image of ``image``'s shape.
        steps: unrolled Adam steps (>= 1).
        solver: the :class:`Adam` settings (default ``Adam()``).
        create_graph: keep the graph of the steps (differentiable decoys); False: the same
            values, detached from ``image``.

    Returns:
        ``[N, C, H, W]`` decoy images (``N = len(decoys)``).

    Example:
        >>> import torch, dance
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Softplus(10))
        >>> x = torch.rand(1, 1, 6, 6)
        >>> d = dance.generate_decoys(net, x, "1", epsilon=0.1, relative=True, solver=dance.Adam(steps=5))
        >>> z = (x + 0.01).clamp(0, 1).requires_grad_(True)
        >>> unrolled_decoys(net, z, d, 3).requires_grad
        True
    """
    if not isinstance(decoys, Decoys):
        raise TypeError(f"decoys must be a dance.Decoys (the warm start), got {type(decoys).__name__}")
    steps = check_int(steps, "steps")
    solver = Adam() if solver is None else solver
    if not isinstance(solver, Adam):
        raise TypeError(f"solver must be a dance.Adam (the unrolled steps are Adam's), got {type(solver).__name__}")
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[0] != 1 or \
            tuple(image.shape[1:]) != tuple(decoys.original.shape[1:]):
        raise ValueError(f"image must be one image [1, C, H, W] of the decoys' shape "
                         f"{tuple(decoys.original.shape)}, got "
                         f"{tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__}")
    z = image
    n = len(decoys)
    if n == 0:
        return z.detach().new_zeros((0,) + tuple(z.shape[1:]))
    name, module = resolve_layer(model, decoys.layer)
    probe = LayerProbe(model, module, name)
    dtype, device = z.dtype, z.device
    with gradients_on():
        zz = z if create_graph else z.detach()
        mask = decoys.masks.to(device).expand(-1, z.shape[1], -1, -1)
        s = decoys.signs.to(device, dtype).view(n, 1, 1, 1)
        offsets = (decoys.images - decoys.original).to(device, dtype)
        eps = float(decoys.epsilon)
        ok_eps = eps * (1.0 - _FEASIBILITY_MARGIN)
        ref = probe(zz)
        start = (zz + offsets).clamp(_PIXEL_CLAMP, 1.0 - _PIXEL_CLAMP)
        w = torch.atanh(2.0 * start - 1.0)
        adam_m = torch.zeros_like(w)
        adam_v = torch.zeros_like(w)
        tau = torch.full((n,), float(solver.tau) * eps, device=device, dtype=dtype)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        for t in range(1, steps + 1):
            if not create_graph or not w.requires_grad:
                w = w.detach().requires_grad_(True)
                adam_m, adam_v = adam_m.detach(), adam_v.detach()
            img = torch.where(mask, 0.5 * (torch.tanh(w) + 1.0), zz)
            diff = (probe(img) - (ref if create_graph else ref.detach())).abs()
            movement = _rowwise(((img - zz) * s).clamp_min(0.0), "sum")
            tau_b = tau.view(-1, *([1] * (diff.dim() - 1)))
            penalty = _rowwise((diff - tau_b).clamp_min(0.0).pow(2), "sum")
            loss = (-movement + solver.c * penalty).sum()
            (grad,) = torch.autograd.grad(loss, w, create_graph=create_graph)
            grad = torch.where(mask, grad, torch.zeros_like(grad))
            adam_m = beta1 * adam_m + (1 - beta1) * grad
            adam_v = beta2 * adam_v + (1 - beta2) * grad * grad
            step = solver.lr * (adam_m / (1 - beta1 ** t)) / (
                torch.sqrt(adam_v / (1 - beta2 ** t) + _UNROLL_SQRT_FLOOR) + adam_eps)
            w = w - step
            with torch.no_grad():
                dev = _rowwise(diff.detach(), "max")
                tighten = (penalty.detach() == 0) | (dev > ok_eps)
                tau = torch.where(tighten, tau * solver.tau_decay, tau)
        out = torch.where(mask, 0.5 * (torch.tanh(w) + 1.0), zz)
    return out if create_graph else out.detach()
