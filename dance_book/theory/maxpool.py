"""Figure A7 (the theory chapter, part 2): conv + ReLU + max-pool, where a decoy shares the
intermediate representation *exactly*; the set of such single-pixel decoys is computed
analytically (:func:`maxpool_exact_decoys`) and can be checked on a grid.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvPoolToy",
    "maxpool_exact_decoys",
]

Tensor = torch.Tensor

# ---------------------------------------------------------------------------------------------
# Part 2: Figure A7 — conv + ReLU + max-pool, exact decoys
# ---------------------------------------------------------------------------------------------


class ConvPoolToy(nn.Module):
    """Figure A7's network: one ``k×k`` "valid" convolution, ReLU, ``pool×pool`` max-pooling.

    The representation ``F_ℓ`` is the output of the submodule ``"pool"``.

    Example:
        >>> import torch
        >>> from dance_book.theory import ConvPoolToy
        >>> net = ConvPoolToy(torch.ones(2, 2) / 4, pool=2)
        >>> net(torch.rand(1, 1, 5, 5)).shape
        torch.Size([1, 1, 2, 2])
    """

    def __init__(self, weight: Tensor, pool: int = 2, relu: bool = True):
        super().__init__()
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError("weight must be a 2-d tensor [k, k]")
        k = weight.shape[0]
        self.conv = nn.Conv2d(1, 1, k, bias=False).to(weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(1, 1, *weight.shape))
        self.act = nn.ReLU() if relu else nn.Identity()
        self.pool = nn.MaxPool2d(pool)
        self.use_relu = relu

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.conv(x)))


def _conv_matrix(weight: Tensor, height: int, width: int) -> Tensor:
    """Dense matrix ``A [U, d]`` of the valid convolution (``U`` output units, row-major)."""
    d = height * width
    eye = torch.eye(d, dtype=weight.dtype).reshape(d, 1, height, width)
    cols = F.conv2d(eye, weight.reshape(1, 1, *weight.shape))  # [d, 1, Ho, Wo]
    return cols.reshape(d, -1).t().contiguous()


def maxpool_exact_decoys(model: ConvPoolToy, x: Tensor, *, grid: int = 0, n_mc: int = 0, seed: int = 0) -> dict:
    """The exact single-pixel decoys of Figure A7: every ``δ`` with ``F_ℓ(x + δ e_j) = F_ℓ(x)``.

    For pixel ``j`` each pooling window ``w`` requires ``max_{u∈w} φ(c_u + A_{uj} δ) = r_w``
    (``c`` the conv outputs, ``φ`` ReLU or identity, ``r`` the pooled representation). The
    units must stay ``≤ r_w`` (an interval ``I_j`` in ``δ``) and one of them must still equal
    ``r_w``. If the window's maximiser does not see ``j`` (``A_{u*j} = 0``), or ``r_w = 0``
    under ReLU, the second condition is automatic: the pixel is *free* and its exact-decoy set
    is the whole interval ``I_j``. Otherwise only finitely many ``δ`` qualify (``δ = 0`` and
    possibly points where another unit takes over the maximum exactly).

    Args:
        model: a :class:`ConvPoolToy`. x: one image ``[H, W]`` (or ``[1, 1, H, W]``) in ``[0, 1]``.
        grid: if > 0, also check each pixel on ``grid`` equally spaced values of ``[0, 1]``
            (counting values whose representation equals ``r`` to 1e-12).
        n_mc: if > 0, estimate the volume fraction of the joint exact-decoy set over the free
            pixels (others fixed) from ``n_mc`` uniform samples of ``[0, 1]^free``.

    Returns:
        dict with ``lo``, ``hi`` (``[H, W]``, the interval ``I_j`` as pixel values),
        ``free`` (``[H, W]`` bool), ``length`` (``[H, W]``, Lebesgue measure of the exact-decoy
        set of ``x_j``), ``n_points`` (isolated exact decoys found for non-free pixels,
        ``δ = 0`` included), ``local_dim`` (dimension of the exact-decoy set near ``x`` in
        ``R^d``: ``d`` minus the rank of the maximising units' weights in windows with
        ``r_w > 0``), ``rep``; with ``grid``: ``grid_fraction``; with ``n_mc``:
        ``volume_fraction`` and ``volume_se``. The free-pixel and ``local_dim`` analysis assumes
        each window has a unique maximiser; ties (exactly equal conv outputs) are detected with a
        1e-12 tolerance, and the grid and Monte Carlo checks compare representations directly.
    """
    if not isinstance(model, ConvPoolToy):
        raise TypeError(f"model must be a ConvPoolToy, got {type(model).__name__}")
    x = x.detach().reshape(x.shape[-2], x.shape[-1]).to(model.conv.weight.dtype)
    H, Wd = x.shape
    d = H * Wd
    weight = model.conv.weight.detach()[0, 0]
    pool = model.pool.kernel_size if isinstance(model.pool.kernel_size, int) else model.pool.kernel_size[0]
    A = _conv_matrix(weight, H, Wd)  # [U, d]
    k = weight.shape[0]
    Ho, Wo = H - k + 1, Wd - k + 1
    c = (A @ x.reshape(-1))  # [U]
    phi = torch.relu if model.use_relu else (lambda t: t)
    Hp, Wp = Ho // pool, Wo // pool
    uu = torch.arange(Ho * Wo)
    ur, uc = uu // Wo, uu % Wo
    win = torch.where((ur < Hp * pool) & (uc < Wp * pool), (ur // pool) * Wp + (uc // pool), -1)  # unit -> window
    used = win >= 0
    n_win = Hp * Wp
    # r from the same arithmetic as c (the module's conv2d may round differently by ~1e-16)
    rep = torch.full((n_win,), -float("inf"), dtype=x.dtype).scatter_reduce(
        0, win[used], phi(c)[used], reduce="amax")
    with torch.no_grad():
        rep_model = model(x[None, None]).reshape(-1)
    r_u = torch.where(used, rep[win.clamp_min(0)], torch.full_like(c, float("inf")))
    # Interval I_j: c_u + A_uj δ ≤ r_w(u) for all used units (relu(z) ≤ r ⟺ z ≤ r as r ≥ 0).
    inf = torch.tensor(float("inf"), dtype=x.dtype)
    Au = A[used]  # [U', d]
    slack = (r_u - c)[used][:, None]  # ≥ 0
    safe = torch.where(Au != 0, Au, torch.ones_like(Au))
    bound = slack / safe
    hi_d = torch.where(Au > 0, bound, inf).amin(0)
    lo_d = torch.where(Au < 0, bound, -inf).amax(0)
    lo = torch.maximum(lo_d, -x.reshape(-1))
    hi = torch.minimum(hi_d, 1 - x.reshape(-1))
    # Free pixel: every window it touches keeps a maximiser that does not see it (or r_w = 0 with ReLU).
    # maximisers, ties included (round images give exact ties that float sums may break by 1e-17)
    is_max = used & (phi(c) >= r_u - 1e-12 * (1 + r_u.abs()))
    W_of = F.one_hot(win.clamp_min(0), n_win).to(torch.bool) & used[:, None]  # [U, n_win]
    touches = (W_of[:, :, None] & (A != 0)[:, None, :]).any(0)  # [n_win, d]
    keeps = (W_of[:, :, None] & (is_max[:, None] & (A == 0))[:, None, :]).any(0)  # [n_win, d]
    zero_win = (rep == 0)[:, None] if model.use_relu else torch.zeros(n_win, 1, dtype=torch.bool)
    free = (~touches | keeps | zero_win).all(0)
    length = torch.where(free, hi - lo, torch.zeros_like(hi))
    # Isolated exact decoys of non-free pixels: candidates δ = (r_w - c_u)/A_uj, checked directly.
    cand = torch.where(Au != 0, bound, torch.zeros_like(bound))  # [U', d]
    xs = x.reshape(-1)
    pix = torch.arange(d).repeat(cand.shape[0])
    dl = cand.reshape(-1)
    okbox = (xs[pix] + dl >= 0) & (xs[pix] + dl <= 1)
    pix, dl = pix[okbox], dl[okbox]
    imgs = xs.repeat(pix.numel(), 1)
    imgs[torch.arange(pix.numel()), pix] += dl
    with torch.no_grad():
        reps = model(imgs.reshape(-1, 1, H, Wd)).reshape(pix.numel(), -1)
    hit = (reps - rep_model).abs().amax(1) <= 1e-12
    pts = torch.unique(torch.stack([pix[hit].to(x.dtype), torch.round(dl[hit] * 1e9) / 1e9], 1), dim=0)
    n_points = torch.bincount(pts[:, 0].long(), minlength=d)
    n_points = torch.where(free, torch.zeros_like(n_points), torch.clamp_min(n_points, 1))
    # Local dimension: maximisers of windows with r_w > 0 give one linear equation each.
    eq_rows = [int(torch.nonzero(is_max & (win == w))[0]) for w in range(n_win) if float(rep[w]) > 0 or not model.use_relu]
    rank = int(torch.linalg.matrix_rank(A[eq_rows])) if eq_rows else 0
    out = {
        "lo": (xs + lo).reshape(H, Wd), "hi": (xs + hi).reshape(H, Wd), "free": free.reshape(H, Wd),
        "length": length.reshape(H, Wd), "n_points": n_points.reshape(H, Wd), "local_dim": d - rank,
        "rep": rep, "A": A, "conv": c,
    }
    if grid:
        vals = torch.linspace(0, 1, int(grid), dtype=x.dtype)
        imgs = xs.repeat(d * vals.numel(), 1)
        rows = torch.arange(d * vals.numel())
        imgs[rows, rows // vals.numel()] = vals.repeat(d)
        with torch.no_grad():
            reps = model(imgs.reshape(-1, 1, H, Wd)).reshape(d, vals.numel(), -1)
        out["grid_fraction"] = ((reps - rep_model).abs().amax(-1) <= 1e-12).to(x.dtype).mean(1).reshape(H, Wd)
    if n_mc:
        fidx = torch.nonzero(free.reshape(-1))[:, 0]
        gen = torch.Generator().manual_seed(int(seed))
        u = torch.rand(int(n_mc), fidx.numel(), generator=gen, dtype=x.dtype)
        imgs = xs.repeat(int(n_mc), 1)
        imgs[:, fidx] = u
        with torch.no_grad():
            reps = model(imgs.reshape(-1, 1, H, Wd)).reshape(int(n_mc), -1)
        inside = ((reps - rep_model).abs().amax(1) <= 1e-12).to(x.dtype)
        out["volume_fraction"] = float(inside.mean())
        out["volume_se"] = float(inside.std() / math.sqrt(int(n_mc)))
        out["n_free"] = int(fidx.numel())
    return out
