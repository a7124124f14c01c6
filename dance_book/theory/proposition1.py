"""The single-layer CNN of the paper's Eq. 4/9 and Proposition 1 (the theory chapter, part 1).

:class:`ToyParams`, :class:`ToyCNN` and the closed forms of the Jacobian ``B`` (Eq. 14-15), the
input gradient ``∇x p_c = B W P̂_c`` (Eq. 16) and the Hessian (Eq. 17-18), all batched over many
random networks (leading dimension ``N``) and over populations of images (any further
dimensions). Decoys of this toy with 1×1 patches have an exact feasible set per pixel
(:func:`feasible_shifts`), from which random feasible decoy populations are drawn
(:func:`decoy_population`). :func:`proposition1_terms` computes the decoy-enhanced score ``Z_j``,
the bound of Proposition 1 with ``C1, C2`` as in Eq. 22 (as printed and with its index and sign
slips fixed), the quantities of each proof step, and a corrected bound that is a theorem.
Checked against torch autograd in ``tests/test_theory.py``.

Conventions: an image is unrolled row-major, ``x ∈ R^d`` with ``d = side²``; the convolution is a
zero-padded "same" cross-correlation (``torch.nn.functional.conv2d`` with ``padding=1``), so
``(g * x)_i = Σ_k g_k x_{i+k}`` over the neighbours ``i+k`` inside the image;
``a_j = 1{(g * x)_j ≥ 0}``; ``W ∈ R^{d×C}``; ``F^c = p_c`` (the softmax probability); the
saliency map is ``E(x)_j = ∂p_c/∂x_j``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import sys
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "KAPPA",
    "ToyParams",
    "ToyCNN",
    "ToyState",
    "toy_forward",
    "toy_jacobian",
    "toy_jacobian_output",
    "toy_gradient",
    "toy_class_gradients",
    "softmax_hessian",
    "toy_hessian",
    "toy_hessian_eq17",
    "toy_hessian_diag",
    "feasible_shifts",
    "decoy_population",
    "decoy_scores",
    "MemberTerms",
    "Proposition1Terms",
    "proposition1_terms",
    "proposition1_sweep",
    "population_from_decoys",
    "counterexample_proposition1",
    "counterexample_near_kink",
    "segment_decomposition",
    "softmax_bilinear_factor",
]

#: ``1/(6√3)``: the sharp constant of Lemma B in the theory chapter,
#: ``|uᵀ ∇²_o p_c v| ≤ KAPPA · range(u) · range(v)`` for any logits ``o``, any number of classes;
#: attained for two classes at ``p_c = (3 ± √3)/6`` with ``u = v = e_c``. (An earlier chain of
#: inequalities gave ``max_p p(1-p)(2-p) = 2/(3√3)``, four times larger.)
KAPPA = 1.0 / (6.0 * math.sqrt(3.0))


def softmax_bilinear_factor(p_c: Tensor) -> Tensor:
    """``λ(p_c)`` with ``|uᵀ ∇²_o p_c v| ≤ λ(p_c) · range(u) · range(v)`` (Lemma B of the theory
    chapter): ``p(1-p)|1-2p|`` where ``min(p, 1-p) ≤ 1/4``, else ``max(p, 1-p)/8``; its maximum over
    ``p`` is :data:`KAPPA`.

    Args:
        p_c: probabilities of the target class, any shape.

    Returns:
        Tensor shaped like ``p_c``.

    Example:
        >>> import math, torch
        >>> from dance_book.theory import softmax_bilinear_factor, KAPPA
        >>> p = torch.tensor([(3 - math.sqrt(3)) / 6, 0.5], dtype=torch.float64)
        >>> [round(v / KAPPA, 6) for v in softmax_bilinear_factor(p).tolist()]
        [1.0, 0.649519]
    """
    p = torch.as_tensor(p_c)
    m = torch.minimum(p, 1 - p)
    return torch.where(m <= 0.25, p * (1 - p) * (1 - 2 * p).abs(), torch.maximum(p, 1 - p) / 8)

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Part 1: the toy single-layer CNN of Eq. 4 / Eq. 9
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToyParams:
    """Parameters of ``N`` single-layer CNNs of Eq. 4 that share image side and class count.

    ``m = relu(g * x)``, ``o = Wᵀ m + b``, ``p = softmax(o)``.

    Args:
        g: ``[N, 3, 3]`` convolution filters.
        W: ``[N, d, C]`` dense weights, ``d = side²`` (row-major pixel order).
        b: ``[N, C]`` biases.

    Example:
        >>> from dance_book.theory import ToyParams
        >>> params = ToyParams.random(4, side=5, n_classes=3, seed=0)
        >>> params.n, params.side, params.d, params.n_classes
        (4, 5, 25, 3)
    """

    g: Tensor
    W: Tensor
    b: Tensor

    def __post_init__(self):
        for name in ("g", "W", "b"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if not torch.is_floating_point(value):
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
        if self.g.dim() != 3 or self.g.shape[1:] != (3, 3):
            raise ValueError(f"g must have shape [N, 3, 3], got {tuple(self.g.shape)}")
        n = self.g.shape[0]
        if self.W.dim() != 3 or self.W.shape[0] != n:
            raise ValueError(f"W must have shape [N={n}, d, C], got {tuple(self.W.shape)}")
        side = math.isqrt(self.W.shape[1])
        if side * side != self.W.shape[1] or side < 1:
            raise ValueError(f"W.shape[1] must be a square number d = side², got {self.W.shape[1]}")
        if self.b.shape != (n, self.W.shape[2]):
            raise ValueError(f"b must have shape [N={n}, C={self.W.shape[2]}], got {tuple(self.b.shape)}")
        if self.W.shape[2] < 2:
            raise ValueError(f"the toy needs at least 2 classes, got C={self.W.shape[2]}")

    @property
    def n(self) -> int:
        return self.g.shape[0]

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def side(self) -> int:
        return math.isqrt(self.W.shape[1])

    @property
    def n_classes(self) -> int:
        return self.W.shape[2]

    @classmethod
    def random(
        cls,
        n: int,
        side: int,
        n_classes: int,
        *,
        seed: int = 0,
        weight_scale: Union[float, Tensor] = 1.0,
        bias_scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> "ToyParams":
        """``n`` random toys: ``g ~ N(0, 1)``, ``W ~ N(0, weight_scale² / d)`` (logits of order
        ``weight_scale``), ``b ~ N(0, bias_scale²)``; ``weight_scale`` may be a tensor ``[n]``."""
        if n < 1 or side < 1 or n_classes < 2:
            raise ValueError(f"need n >= 1, side >= 1, n_classes >= 2, got {n}, {side}, {n_classes}")
        gen = torch.Generator().manual_seed(int(seed))
        d = side * side
        g = torch.randn(n, 3, 3, generator=gen, dtype=dtype)
        scale = torch.as_tensor(weight_scale, dtype=dtype).reshape(-1, 1, 1)
        W = torch.randn(n, d, n_classes, generator=gen, dtype=dtype) * scale / math.sqrt(d)
        b = torch.randn(n, n_classes, generator=gen, dtype=dtype) * bias_scale
        return cls(g, W, b)

    def select(self, index) -> "ToyParams":
        """The sub-batch ``index`` (an int, slice, or index tensor); always keeps the batch dim."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ToyParams(self.g[index], self.W[index], self.b[index])

    def module(self, i: int = 0, output: str = "probs") -> "ToyCNN":
        """Network ``i`` as a :class:`ToyCNN` (a copy of the parameters, same dtype)."""
        return ToyCNN(self.g[i], self.W[i], self.b[i], output=output)


class ToyCNN(nn.Module):
    """One single-layer CNN of Eq. 4 as an ``nn.Module`` (for ``dance.generate_decoys``).

    ``forward(x [B, 1, side, side]) -> p [B, C]`` (``output="probs"``, the paper's ``F^c = p_c``)
    or the logits ``o`` (``output="logits"``). The ReLU output ``m`` (the decoy layer ℓ of the
    theory) is the submodule named ``"relu"``.

    Args:
        g: ``[3, 3]`` filter. W: ``[d, C]`` weights. b: ``[C]`` biases.
        output: ``"probs"`` or ``"logits"``.

    Example:
        >>> import torch
        >>> from dance_book.theory import ToyParams
        >>> net = ToyParams.random(1, side=4, n_classes=3, seed=0).module(0)
        >>> p = net(torch.rand(2, 1, 4, 4, dtype=torch.float64))
        >>> p.shape, bool(torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64)))
        (torch.Size([2, 3]), True)
    """

    def __init__(self, g: Tensor, W: Tensor, b: Tensor, output: str = "probs"):
        super().__init__()
        if output not in ("probs", "logits"):
            raise ValueError(f"output must be 'probs' or 'logits', got {output!r}")
        ToyParams(g[None], W[None], b[None])  # shape checks
        d, n_classes = W.shape
        self.side = math.isqrt(d)
        self.output = output
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False).to(W.dtype)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(d, n_classes).to(W.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(g.detach().reshape(1, 1, 3, 3))
            self.fc.weight.copy_(W.detach().t())
            self.fc.bias.copy_(b.detach())

    def forward(self, x: Tensor) -> Tensor:
        m = self.relu(self.conv(x))
        o = self.fc(m.flatten(1))
        return torch.softmax(o, dim=1) if self.output == "probs" else o

    def params(self) -> ToyParams:
        """This network's parameters as a one-element :class:`ToyParams` (detached copies)."""
        return ToyParams(
            self.conv.weight.detach().reshape(1, 3, 3).clone(),
            self.fc.weight.detach().t()[None].clone(),
            self.fc.bias.detach()[None].clone(),
        )


def _check_x(params: ToyParams, x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, ..., d], got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] != params.n or x.shape[-1] != params.d:
        raise ValueError(
            f"{name} must have shape [N={params.n}, ..., d={params.d}] (flattened images, one "
            f"leading entry per network), got {tuple(x.shape)}"
        )
    if x.dtype != params.W.dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the parameters are {params.W.dtype}; cast one of them")
    return x


def _expand(t: Tensor, pop: Sequence[int]) -> Tensor:
    """``[N, *rest] -> [N * prod(pop), *rest]``: repeat per-network tensors over population dims."""
    n = t.shape[0]
    shaped = t.reshape(n, *([1] * len(pop)), *t.shape[1:]).expand(n, *pop, *t.shape[1:])
    return shaped.reshape(-1, *t.shape[1:])


def _conv(g9: Tensor, x: Tensor, side: int) -> Tensor:
    """``(g * x)`` for a batch: ``g9 [B, 9]``, ``x [B, d]`` -> ``[B, d]`` (zero-padded, same size)."""
    # Nine shifted multiply-adds of the zero-padded image: the same sum as unfold + einsum (kernel
    # position k = 3 * row + column), without materialising the [B, 9, d] columns (4x faster on big batches).
    b = x.shape[0]
    padded = F.pad(x.reshape(b, side, side), (1, 1, 1, 1))
    out = g9[:, 0, None, None] * padded[:, :side, :side]
    for k in range(1, 9):
        row, col = divmod(k, 3)
        out = out + g9[:, k, None, None] * padded[:, row:row + side, col:col + side]
    return out.reshape(b, side * side)


def _conv_adjoint(g9: Tensor, v: Tensor, side: int) -> Tensor:
    """Adjoint of :func:`_conv`: ``(Σ_i g_{j-i} v_i)_j``. ``v`` is ``[B, d]`` or ``[B, d, C]``."""
    squeeze = v.dim() == 2
    if squeeze:
        v = v[..., None]
    bsz, d, c = v.shape
    cols = g9[:, None, :, None] * v.transpose(1, 2)[:, :, None, :]  # [B, C, 9, d]
    out = F.fold(cols.reshape(bsz, c * 9, d), (side, side), 3, padding=1)  # [B, C, s, s]
    out = out.reshape(bsz, c, d).transpose(1, 2)
    return out[..., 0] if squeeze else out


def _box(v: Tensor, side: int) -> Tensor:
    """``Σ_{k∈K} v_{j+k}`` over the 3×3 neighbours inside the image; ``v [B, d]``."""
    ones = torch.ones(v.shape[0], 9, dtype=v.dtype, device=v.device)
    return _conv(ones, v, side)


def _neighbour_index(side: int, device=None) -> Tensor:
    """``nb[j, k]`` = flat index of pixel ``j + off(k)`` (row-major offsets ``(k//3 - 1, k%3 - 1)``,
    the order of ``g.reshape(9)``), or ``d`` where that neighbour lies outside the image."""
    r, c = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    r, c = r.reshape(-1, 1), c.reshape(-1, 1)
    du = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1]).reshape(1, 9)
    dv = torch.tensor([-1, 0, 1, -1, 0, 1, -1, 0, 1]).reshape(1, 9)
    rr, cc = r + du, c + dv
    inside = (rr >= 0) & (rr < side) & (cc >= 0) & (cc < side)
    return torch.where(inside, rr * side + cc, side * side).to(device)


def _flip(g: Tensor) -> Tensor:
    """``g_{-k}``: the filter rotated by 180°."""
    return torch.flip(g, dims=(-2, -1))


@dataclass
class ToyState:
    """Forward quantities of the toy at inputs ``x [N, *pop, d]``; all share those leading dims.

    ``pre = g * x`` and ``a = 1{pre ≥ 0}`` ``[.., d]``; ``m = relu(pre)`` ``[.., d]``;
    ``o``, ``p`` ``[.., C]``; ``P_hat = diag(p) - p pᵀ`` ``[.., C, C]``.
    """

    pre: Tensor
    a: Tensor
    m: Tensor
    o: Tensor
    p: Tensor
    P_hat: Tensor


def toy_forward(params: ToyParams, x: Tensor) -> ToyState:
    """Forward pass of Eq. 4 for ``N`` networks at ``x [N, *pop, d]`` (each network sees its own slice).

    Returns:
        :class:`ToyState` with leading dims ``[N, *pop]``.
    """
    x = _check_x(params, x)
    pop = x.shape[1:-1]
    g9 = _expand(params.g.reshape(params.n, 9), pop)
    W = params.W
    pre = _conv(g9, x.reshape(-1, params.d), params.side).reshape(x.shape)
    a = (pre >= 0).to(x.dtype)  # the paper's convention a_j = 1{(g*x)_j >= 0}
    m = torch.relu(pre)
    o = torch.einsum("n...d,ndc->n...c", m, W) + params.b.reshape(params.n, *([1] * len(pop)), -1)
    p = torch.softmax(o, dim=-1)
    P_hat = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    return ToyState(pre, a, m, o, p, P_hat)


def _target(params: ToyParams, target, lead: Sequence[int], device) -> Tensor:
    """Broadcast ``target`` (int or LongTensor ``[N]``) to ``[N, *pop]``."""
    if isinstance(target, bool):
        raise TypeError("target must be an int or a LongTensor [N], got bool")
    if isinstance(target, int):
        t = torch.full((params.n,), target, dtype=torch.long, device=device)
    elif isinstance(target, torch.Tensor) and not torch.is_floating_point(target) and target.dim() == 1 and target.shape[0] == params.n:
        t = target.long()
    else:
        raise TypeError(f"target must be an int or a LongTensor of shape [N={params.n}], got {target!r}")
    if (t < 0).any() or (t >= params.n_classes).any():
        raise ValueError(f"target must be in [0, {params.n_classes}), got {t.tolist()}")
    return t.reshape(params.n, *([1] * (len(lead) - 1))).expand(*lead)


def toy_jacobian(params: ToyParams, x: Tensor) -> Tensor:
    """The Jacobian ``B = ∂m/∂x`` of Eq. 14-15, built entry by entry from ``B_ij = a_j g_{i-j}``.

    Args:
        params: ``N`` networks. x: ``[N, d]`` one input per network.

    Returns:
        ``[N, d, d]`` with ``B[n, i, j] = ∂m_j/∂x_i`` (denominator layout, as in the paper).

    Example:
        >>> import torch
        >>> from dance_book.theory import ToyParams, toy_jacobian
        >>> params = ToyParams.random(2, side=3, n_classes=2, seed=0)
        >>> toy_jacobian(params, torch.rand(2, 9, dtype=torch.float64)).shape
        torch.Size([2, 9, 9])
    """
    x = _check_x(params, x)
    if x.dim() != 2:
        raise ValueError(f"x must be [N, d] for the dense Jacobian, got {tuple(x.shape)}")
    s, d = params.side, params.d
    a = toy_forward(params, x).a
    B = x.new_zeros(params.n, d, d)
    rows, cols = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    j = (rows * s + cols).reshape(-1)
    for u in (-1, 0, 1):  # i - j = (u, v) ∈ K: the 9 offsets of Eq. 15 (not a loop over pixels)
        for v in (-1, 0, 1):
            ri, ci = rows.reshape(-1) + u, cols.reshape(-1) + v
            inside = (ri >= 0) & (ri < s) & (ci >= 0) & (ci < s)
            i = ri[inside] * s + ci[inside]
            jj = j[inside]
            B[:, i, jj] = a[:, jj] * params.g[:, u + 1, v + 1][:, None]
    return B


def toy_jacobian_output(params: ToyParams, x: Tensor) -> Tensor:
    """``B W`` (``[N, *pop, d, C]``): row ``j`` is ``b_j = Σ_k a_{j+k} g_{-k} W_{j+k,·}``, so that
    ``∇x o_{c'} = (B W)_{·c'}``. Computed with the transposed convolution, no dense ``B``."""
    x = _check_x(params, x)
    pop = x.shape[1:-1]
    a = toy_forward(params, x).a.reshape(-1, params.d)
    g9 = _expand(params.g.reshape(params.n, 9), pop)
    W = _expand(params.W, pop)
    BW = _conv_adjoint(g9, a[..., None] * W, params.side)
    return BW.reshape(*x.shape, params.n_classes)


def toy_gradient(params: ToyParams, x: Tensor, target) -> Tensor:
    """The saliency map ``E(x) = ∇x p_c = B W P̂_{·c}`` of Eq. 16, batched.

    Args:
        params: ``N`` networks. x: ``[N, *pop, d]``. target: class ``c`` (int or LongTensor ``[N]``).

    Returns:
        ``[N, *pop, d]``.

    Example:
        >>> import torch
        >>> from dance_book.theory import ToyParams, toy_gradient
        >>> params = ToyParams.random(3, side=4, n_classes=5, seed=1)
        >>> toy_gradient(params, torch.rand(3, 7, 16, dtype=torch.float64), target=2).shape
        torch.Size([3, 7, 16])
    """
    x = _check_x(params, x)
    state = toy_forward(params, x)
    c = _target(params, target, x.shape[:-1], x.device)
    P_c = torch.gather(state.P_hat, -1, c[..., None, None].expand(*c.shape, params.n_classes, 1))[..., 0]
    v = torch.einsum("ndc,n...c->n...d", params.W, P_c)  # W P̂_{·c} = ∇_m p_c
    pop = x.shape[1:-1]
    g9 = _expand(params.g.reshape(params.n, 9), pop)
    E = _conv_adjoint(g9, (state.a * v).reshape(-1, params.d), params.side)
    return E.reshape(x.shape)


def toy_class_gradients(params: ToyParams, x: Tensor) -> Tensor:
    """``∇x p_{c'}`` for every class: ``G = B W P̂`` ``[N, *pop, d, C]``."""
    state = toy_forward(params, x)
    return toy_jacobian_output(params, x) @ state.P_hat


def softmax_hessian(p: Tensor, target: Tensor) -> Tensor:
    """``S_c = ∇²_o p_c = p_c [(e_c - p)(e_c - p)ᵀ - diag(p) + p pᵀ]``; ``p [.., C]``, ``target [..]``."""
    e = F.one_hot(target, p.shape[-1]).to(p.dtype)
    u = e - p
    pc = (p * e).sum(-1)[..., None, None]
    return pc * (u[..., :, None] * u[..., None, :] - torch.diag_embed(p) + p[..., :, None] * p[..., None, :])


def toy_hessian(params: ToyParams, x: Tensor, target) -> Tensor:
    """The Hessian ``∇²x p_c = (B W) S_c (B W)ᵀ`` (``[N, d, d]``) inside an activation region.

    ``B`` is piecewise constant in ``x`` (ReLU), so only the softmax curvature ``S_c`` contributes;
    this is Eq. 17-18 written as one matrix product.
    """
    x = _check_x(params, x)
    state = toy_forward(params, x)
    c = _target(params, target, x.shape[:-1], x.device)
    S = softmax_hessian(state.p, c)
    BW = toy_jacobian_output(params, x)
    return BW @ S @ BW.transpose(-1, -2)


def toy_hessian_diag(params: ToyParams, x: Tensor, target) -> Tensor:
    """``H_jj = b_jᵀ S_c b_j`` for all ``j`` (``[N, *pop, d]``), without forming ``H``."""
    x = _check_x(params, x)
    state = toy_forward(params, x)
    c = _target(params, target, x.shape[:-1], x.device)
    S = softmax_hessian(state.p, c)
    BW = toy_jacobian_output(params, x)
    return torch.einsum("...ja,...ab,...jb->...j", BW, S, BW)


def _dP_dx(params: ToyParams, state: ToyState, BW: Tensor, c: Tensor, paper_sign: bool) -> Tensor:
    """``∂P̂_{c'c}/∂x_i`` as ``[.., d(i), C(c')]`` from Eq. 18 (``paper_sign=True``: as printed,
    without the minus sign of the off-diagonal entries)."""
    G = BW @ state.P_hat  # ∇x p_{c'}, [.., d, C]
    pc = torch.gather(state.p, -1, c[..., None])  # [.., 1]
    Gc = torch.gather(G, -1, c[..., None, None].expand(*c.shape, G.shape[-2], 1))  # [.., d, 1]
    off = pc[..., None, :] * G + state.p[..., None, :] * Gc  # p_c ∇p_{c'} + p_{c'} ∇p_c
    if not paper_sign:
        off = -off
    diag = (1 - 2 * pc[..., None, :]) * Gc
    is_c = F.one_hot(c, params.n_classes).to(G.dtype)[..., None, :]
    return is_c * diag + (1 - is_c) * off


def toy_hessian_eq17(params: ToyParams, x: Tensor, target, *, paper_index: bool = False, paper_sign: bool = False) -> Tensor:
    """The Hessian assembled literally from Eq. 17-18:
    ``H_ij = (Σ_k a_{j+k} g_{±k} W_{j+k,·}) · ∂P̂_{·c}/∂x_i``.

    Args:
        paper_index: use ``g_k`` as printed in Eq. 17 (``False``: ``g_{-k}``, which is what
            ``B_{j,j+k} = a_{j+k} g_{j-(j+k)}`` gives).
        paper_sign: use Eq. 18 as printed (``False``: with the minus sign of
            ``∂(-p_c p_{c'})/∂x_i``).

    Returns:
        ``[N, d, d]``; equal to :func:`toy_hessian` when both flags are ``False``.
    """
    x = _check_x(params, x)
    if x.dim() != 2:
        raise ValueError(f"x must be [N, d], got {tuple(x.shape)}")
    state = toy_forward(params, x)
    c = _target(params, target, x.shape[:-1], x.device)
    BW = toy_jacobian_output(params, x)
    dP = _dP_dx(params, state, BW, c, paper_sign)  # [N, d(i), C]
    rows = _neighbour_sum(params, state.a, paper_index)  # [N, d(j), C]
    return torch.einsum("nic,njc->nij", dP, rows)


def _neighbour_sum(params: ToyParams, a: Tensor, paper_index: bool) -> Tensor:
    """``Σ_k a_{j+k} g'_k W_{j+k,·}`` with ``g' = g`` (paper_index) or ``g_{-k}``; ``a [N, *pop, d]``."""
    pop = a.shape[1:-1]
    g = params.g if paper_index else _flip(params.g)
    # Σ_k g'_k y_{j+k} is the forward cross-correlation of y with g'; with g' = g_{-k} it is the adjoint.
    g9 = _expand(g.reshape(params.n, 9), pop)
    y = a.reshape(-1, params.d)[..., None] * _expand(params.W, pop)  # [B, d, C]
    bsz, d, C = y.shape
    out = _conv(g9.repeat_interleave(C, 0), y.transpose(1, 2).reshape(-1, d), params.side)
    return out.reshape(bsz, C, d).transpose(1, 2).reshape(*a.shape, C)


# ---------------------------------------------------------------------------------------------
# Decoys of the toy: exact feasible sets and random feasible populations
# ---------------------------------------------------------------------------------------------


def _as_eps(params: ToyParams, epsilon, dtype, device) -> Tensor:
    eps = torch.as_tensor(epsilon, dtype=dtype, device=device)
    if eps.dim() == 0:
        eps = eps.expand(params.n)
    if eps.shape != (params.n,):
        raise ValueError(f"epsilon must be a number or a tensor [N={params.n}], got shape {tuple(eps.shape)}")
    if not torch.isfinite(eps).all() or (eps < 0).any():
        raise ValueError("epsilon must be finite and >= 0 (0 asks for exact decoys)")
    return eps


def feasible_shifts(params: ToyParams, x: Tensor, epsilon) -> tuple[Tensor, Tensor]:
    """Exact feasible set of a 1×1 decoy (Eq. 2): all ``δ`` with
    ``‖m(x + δ e_j) - m(x)‖_∞ ≤ ε`` and ``x_j + δ ∈ [0, 1]``, for every pixel ``j`` at once.

    The set is an interval ``[lo_j, hi_j] ∋ 0``: each of the ≤ 9 outputs ``i`` that see pixel ``j``
    constrains ``relu(pre_i + g_{j-i} δ)`` to ``[m_i - ε, m_i + ε]``, which (relu being monotone)
    is an interval in ``δ``. With ``ε = 0`` a pixel can move only if every output it feeds with a
    nonzero weight is inactive, and then only as far as keeps them inactive.

    Args:
        params: ``N`` networks. x: ``[N, d]`` images in ``[0, 1]``.
        epsilon: tolerance, a number or ``[N]`` (absolute activation units); ``0`` for exact decoys.

    Returns:
        ``(lo, hi)``, each ``[N, d]``, ``lo ≤ 0 ≤ hi``.
    """
    x = _check_x(params, x)
    if x.dim() != 2:
        raise ValueError(f"x must be [N, d], got {tuple(x.shape)}")
    eps = _as_eps(params, epsilon, x.dtype, x.device)[:, None, None]
    s, d = params.side, params.d
    state = toy_forward(params, x)
    # For neighbour slot k (output i = j + off(k)), the weight of x_j in pre_i is g_{-k}.
    pre_n = F.unfold(state.pre.reshape(-1, 1, s, s), 3, padding=1)  # [N, 9, d]
    m_n = torch.relu(pre_n)
    inside = F.unfold(torch.ones(1, 1, s, s, dtype=x.dtype, device=x.device), 3, padding=1) > 0  # [1, 9, d]
    gam = _flip(params.g).reshape(params.n, 9, 1).expand(-1, -1, d)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    upper_z = m_n + eps
    lower_z = torch.where(m_n > eps, m_n - eps, -inf)
    active = inside & (gam != 0)
    safe = torch.where(gam != 0, gam, torch.ones_like(gam))
    t1, t2 = (lower_z - pre_n) / safe, (upper_z - pre_n) / safe
    lo_k = torch.where(active, torch.where(gam > 0, t1, t2), -inf)
    hi_k = torch.where(active, torch.where(gam > 0, t2, t1), inf)
    lo = torch.maximum(lo_k.amax(1), -x)
    hi = torch.minimum(hi_k.amin(1), 1 - x)
    # Rounding can leave a ±1e-17 sliver around 0 where the true set is {0}.
    return torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))


def decoy_population(
    params: ToyParams,
    x: Tensor,
    epsilon,
    *,
    kind: str = "extreme",
    n_random: int = 0,
    seed: int = 0,
    shrink: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """Random *feasible* decoy populations of the toy with 1×1 patches.

    ``kind``:

    * ``"extreme"`` — for each pixel ``j`` the two decoys ``x + hi_j e_j`` and ``x + lo_j e_j``
      (what an exact solver of Eq. 2 with ``s = ±1`` returns for the mask ``{j}``);
    * ``"uniform"`` — for each pixel two decoys ``x + U e_j`` with ``U`` uniform on ``[lo_j, hi_j]``;
    * ``"spaced"`` — the 9 masks of pixels on a stride-3 grid (their outputs do not overlap, so
      each pixel can use its whole interval), each with an upward and a downward decoy whose
      shifts are uniform fractions of ``hi_j`` / ``lo_j``; plus ``n_random`` more such decoys.

    Every shift is multiplied by ``1 - shrink`` so that no pre-activation lands exactly on 0
    (the paper's non-pathological assumption).

    Returns:
        ``(decoys [N, n, d], masks [N, n, d] bool)``; the first decoy is ``x`` itself (the
        trivially valid decoy of §3.1), with an empty mask.
    """
    x = _check_x(params, x)
    if kind not in ("extreme", "uniform", "spaced"):
        raise ValueError(f"kind must be 'extreme', 'uniform' or 'spaced', got {kind!r}")
    lo, hi = feasible_shifts(params, x, epsilon)
    lo, hi = lo * (1 - shrink), hi * (1 - shrink)
    N, d, s = params.n, params.d, params.side
    gen = torch.Generator().manual_seed(int(seed))
    eye = torch.eye(d, dtype=torch.bool, device=x.device)
    if kind in ("extreme", "uniform"):
        if kind == "extreme":
            up, down = hi, lo
        else:
            u = torch.rand(2, N, d, generator=gen, dtype=x.dtype).to(x.device)
            up = lo + u[0] * (hi - lo)
            down = lo + u[1] * (hi - lo)
        shifts = torch.cat([torch.diag_embed(up), torch.diag_embed(down)], dim=1)  # [N, 2d, d]
        masks = torch.cat([eye, eye], 0)[None].expand(N, -1, -1)
    else:
        r, c = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        grid = ((r % 3) * 3 + (c % 3)).reshape(-1).to(x.device)  # which of the 9 masks holds j
        base = torch.stack([grid == k for k in range(9)])  # [9, d]
        base = base[base.any(1)]
        n_extra = int(n_random)
        which = torch.cat([torch.arange(base.shape[0]), torch.randint(0, base.shape[0], (n_extra,), generator=gen)])
        masks = base[which.to(x.device)].repeat(2, 1)  # [2m, d]: up then down
        m_total = masks.shape[0]
        frac = torch.rand(N, m_total, d, generator=gen, dtype=x.dtype).to(x.device)
        frac[:, : base.shape[0]] = 1.0  # the first upward mask set is extreme...
        frac[:, m_total // 2 : m_total // 2 + base.shape[0]] = 1.0  # ...and so is the downward one
        sign_up = torch.arange(m_total, device=x.device) < m_total // 2
        amount = torch.where(sign_up[None, :, None], hi[:, None, :], lo[:, None, :]) * frac
        shifts = amount * masks[None]
        masks = masks[None].expand(N, -1, -1)
    decoys = (x[:, None, :] + shifts).clamp(0.0, 1.0)
    decoys = torch.cat([x[:, None, :], decoys], 1)
    masks = torch.cat([torch.zeros(N, 1, d, dtype=torch.bool, device=x.device), masks], 1)
    return decoys, masks


def decoy_scores(E: Tensor) -> dict:
    """Decoy-enhanced score of Eq. 3 from saliency maps ``E [N, n, d]`` of a population whose
    first member is ``x``: ``Z = max - min``, ``Z⁺ = max - E(x)``, ``Z⁻ = E(x) - min`` and the
    maximising / minimising members ``t_plus``, ``t_minus`` ``[N, d]``."""
    if E.dim() != 3:
        raise ValueError(f"E must be [N, n, d] with E[:, 0] the original image's map, got {tuple(E.shape)}")
    top, t_plus = E.max(1)
    bot, t_minus = E.min(1)
    return {"Z": top - bot, "Z_plus": top - E[:, 0], "Z_minus": E[:, 0] - bot, "t_plus": t_plus, "t_minus": t_minus}


def _range(v: Tensor) -> Tensor:
    return v.amax(-1) - v.amin(-1)


@dataclass(frozen=True)
class MemberTerms:
    """The proof of Proposition 1 at one chosen population member per pixel: for pixel ``j`` the
    member ``x̃`` that maximises (:attr:`Proposition1Terms.plus`) or minimises
    (:attr:`Proposition1Terms.minus`) ``E_j`` over ``j``'s population. Every field is ``[N, d]``.

    Attributes:
        delta: ``(x̃ - x)_j``.
        sum_a: ``Σ_k ã_{j+k}``, the active outputs that ``j`` feeds at ``x̃``.
        C2_printed: ``C2`` of Eq. 22 with ``g_k`` and Eq. 18 as printed.
        C2_fixed: ``C2`` with ``g_{-k}`` and the sign of Eq. 18 fixed (``P̃_{·c} = ∂P̂_{·c}/∂x`` at ``x̃``).
        C2_alt: ``C2`` reading ``P̃_{·c}`` as ``P̂_{·c}`` at ``x̃``.
        bound_printed, bound_fixed, bound_alt: the right side of Proposition 1,
            ``C2_* · |delta| · sum_a + C1``, under each reading of ``C2``.
        bound_generous: the largest of the three.
        p_tilde: ``F^c(x̃)``.
        lin: ``∇p_c(x̃)ᵀΔ`` with ``Δ = x - x̃``.
        quad: ``½ ΔᵀH̃Δ``.
        taylor_remainder: ``F^c(x) - (p_tilde + lin + quad)``, the remainder of the Taylor step.
        E_tilde: ``E(x̃)_j``.
        H_jj: the exact Hessian entry ``H̃_jj``.
        eq21: ``½ (x̃ - x)_j H̃_jj`` (the right side of Eq. 21).
        eq17_printed, eq17_fixed: ``H̃_jj`` from Eq. 17-18 as printed / fixed.
        flips: neighbours of ``j`` whose activation differs between ``x`` and ``x̃``.
        n_moved: pixels in which ``x̃`` differs from ``x``.
        flip_part: ``(b̃_j - b_j)ᵀ P̂_{·c}(x̃)``, the exact part of ``E(x̃)_j - E(x)_j`` caused by
            activation flips (the rest, ``b_jᵀ(P̂_{·c}(x̃) - P̂_{·c}(x))``, comes from the change of ``p``).
    """

    delta: Tensor
    sum_a: Tensor
    C2_printed: Tensor
    C2_fixed: Tensor
    C2_alt: Tensor
    bound_printed: Tensor
    bound_fixed: Tensor
    bound_alt: Tensor
    bound_generous: Tensor
    p_tilde: Tensor
    lin: Tensor
    quad: Tensor
    taylor_remainder: Tensor
    E_tilde: Tensor
    H_jj: Tensor
    eq21: Tensor
    eq17_printed: Tensor
    eq17_fixed: Tensor
    flips: Tensor
    n_moved: Tensor
    flip_part: Tensor


#: The per-pixel fields of :class:`MemberTerms` (of the maximising member) that
#: :meth:`Proposition1Terms.columns` lists under their own names.
_PLUS_COLUMNS = ("flip_part", "sum_a", "delta", "C2_printed", "C2_fixed", "C2_alt", "p_tilde", "lin", "quad",
                 "E_tilde", "H_jj", "eq21", "eq17_printed", "eq17_fixed", "flips", "n_moved")


@dataclass(frozen=True)
class Proposition1Terms:
    """Everything Proposition 1 and its proof talk about, for ``N`` networks and each pixel ``j``
    (returned by :func:`proposition1_terms`). Fields are ``[N, d]`` unless noted.

    Attributes:
        target: ``[N]`` the explained class ``c``.
        E: ``[N, n, d]`` the saliency maps ``E(x̃)`` of the population (``E[:, 0] = E(x)``).
        Z, Z_plus, Z_minus: the decoy-enhanced score ``max - min`` of Eq. 3 over pixel ``j``'s
            population, and its parts ``max - E(x)_j`` and ``E(x)_j - min``.
        t_plus, t_minus: indices of the maximising / minimising members (LongTensor).
        C1: ``|∇_{x_j} p_c|`` at ``x``.
        p_x: ``F^c(x) = p_c(x)``.
        a0: the activation pattern ``a = 1{g * x ≥ 0}`` at ``x``.
        sum_a0: ``Σ_k a_{j+k}`` at ``x``.
        pixel_range: ``max - min`` of ``x_j`` over the population.
        plus: :class:`MemberTerms` of the maximising member (the decoy the proof bounds).
        minus: :class:`MemberTerms` of the minimising member (so ``Z ≤ plus.bound_* + minus.bound_*``
            is the two-sided reading).
        repair_plus: the minimal repair (a theorem), ``plus.C2_alt · plus.sum_a + C1 ≥ Z_plus``.
        repair_Z: the same added for the minimising member, ``≥ Z``.
        corr_smooth, corr_flip: ``[N, n, d]`` the two terms of the corrected bound (Proposition 1′).
        corr_bound: ``[N, n, d]`` their sum, a theorem: ``|E(x̃ᵗ)_j - E(x)_j| ≤ corr_bound[t, j]``
            for every member ``t``.
        corr_Z: ``corr_bound[t⁺] + corr_bound[t⁻] ≥ Z``.
        corr_single: ``KAPPA · range(b_j) · max_k |g_{-k}| range(W_{j+k}) · |plus.delta| · sum_a0``,
            the Proposition-1-shaped form valid for 1×1 decoys at ``j`` that flip no activation.
        smooth_tightness: the largest ``|E(x̃)_j - E(x)_j| / corr_smooth`` over the members that flip
            no activation around ``j`` (1 would mean the smooth term is attained; 0 if none qualifies).
    """

    target: Tensor
    E: Tensor
    Z: Tensor
    Z_plus: Tensor
    Z_minus: Tensor
    t_plus: Tensor
    t_minus: Tensor
    C1: Tensor
    p_x: Tensor
    a0: Tensor
    sum_a0: Tensor
    pixel_range: Tensor
    plus: MemberTerms
    minus: MemberTerms
    repair_plus: Tensor
    repair_Z: Tensor
    corr_smooth: Tensor
    corr_flip: Tensor
    corr_bound: Tensor
    corr_Z: Tensor
    corr_single: Tensor
    smooth_tightness: Tensor

    def columns(self) -> dict:
        """The per-pixel ``[N, d]`` quantities as table columns: the fields above, the maximising
        member's proof quantities under their own names (``delta``, ``C2_fixed``, ``H_jj``, ...), its
        bounds as ``bound_printed`` ... ``bound_generous`` and the minimising member's as
        ``bound_minus_printed`` ... ``bound_minus_generous`` (the columns of :func:`proposition1_sweep`)."""
        plus, minus = self.plus, self.minus
        cols = {"Z": self.Z, "Z_plus": self.Z_plus, "Z_minus": self.Z_minus, "t_plus": self.t_plus,
                "t_minus": self.t_minus, "C1": self.C1}
        cols.update({k: getattr(plus, k) for k in _PLUS_COLUMNS})
        cols["p_x"], cols["taylor_remainder"] = self.p_x, plus.taylor_remainder
        for key in ("printed", "fixed", "alt", "generous"):
            cols[f"bound_{key}"] = getattr(plus, f"bound_{key}")
            cols[f"bound_minus_{key}"] = getattr(minus, f"bound_{key}")
        cols.update(repair_plus=self.repair_plus, repair_Z=self.repair_Z, smooth_tightness=self.smooth_tightness,
                    corr_Z=self.corr_Z, corr_single=self.corr_single, sum_a0=self.sum_a0,
                    pixel_range=self.pixel_range, a0=self.a0)
        return cols


def proposition1_terms(params: ToyParams, x: Tensor, decoys: Tensor, target=None, masks: Optional[Tensor] = None) -> Proposition1Terms:
    """Everything Proposition 1 and its proof talk about, for each network and pixel.

    Args:
        params: ``N`` networks. x: ``[N, d]``. decoys: ``[N, n, d]`` with ``decoys[:, 0] == x``.
        target: class ``c``; default the predicted class ``argmax p(x)``.
        masks: optional ``[N, n, d]`` bool patch masks of the members. If given, pixel ``j``'s
            population is ``x`` plus the members whose mask contains ``j`` (the reading of the
            proof, where the decoy that matters for ``j`` is the one swapped *at* ``j``);
            otherwise every member counts for every pixel (Eq. 3 as defined).

    Returns:
        :class:`Proposition1Terms`: the scores, ``C1``, the proof quantities and the bounds of
        Proposition 1 for the maximising and the minimising member (:class:`MemberTerms`), the
        minimal repair and the corrected bound (Proposition 1′); :meth:`Proposition1Terms.columns`
        gives the per-pixel ones as table columns.

    Example:
        >>> import torch
        >>> from dance_book.theory import ToyParams, decoy_population, proposition1_terms
        >>> params = ToyParams.random(2, side=4, n_classes=3, seed=0)
        >>> x = torch.rand(2, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> decoys, masks = decoy_population(params, x, 0.05)
        >>> R = proposition1_terms(params, x, decoys, masks=masks)
        >>> R.Z.shape, R.plus.bound_fixed.shape, R.corr_bound.shape
        (torch.Size([2, 16]), torch.Size([2, 16]), torch.Size([2, 33, 16]))
        >>> bool(((R.E - R.E[:, :1]).abs() <= R.corr_bound * (1 + 1e-9) + 1e-15).all())  # Proposition 1′
        True
    """
    x = _check_x(params, x)
    decoys = _check_x(params, decoys, "decoys")
    if x.dim() != 2 or decoys.dim() != 3:
        raise ValueError(f"x must be [N, d] and decoys [N, n, d], got {tuple(x.shape)} and {tuple(decoys.shape)}")
    if not torch.equal(decoys[:, 0], x):
        raise ValueError("decoys[:, 0] must be x itself (the original image is a member of its population)")
    N, d, C, s = params.n, params.d, params.n_classes, params.side
    st0 = toy_forward(params, x)
    c = st0.p.argmax(-1) if target is None else _target(params, target, (N,), x.device)
    E = toy_gradient(params, decoys, c)
    if masks is not None:
        if not isinstance(masks, torch.Tensor) or masks.shape != decoys.shape:
            raise ValueError(f"masks must be a bool tensor shaped like decoys {tuple(decoys.shape)}")
        counts = masks.bool().clone()
        counts[:, 0] = True
        scores = decoy_scores(torch.where(counts, E, E[:, :1]))
    else:
        scores = decoy_scores(E)
    C1 = E[:, 0].abs()
    pc_x = torch.gather(st0.p, -1, c[:, None]).expand(N, d)  # F^c(x)

    rangeW = _range(params.W)  # [N, d]
    # Everything per member once ([N, n, ...]); per pixel j we then gather the member t_j.
    stT = toy_forward(params, decoys)
    n = decoys.shape[1]
    cT = c[:, None].expand(N, n)
    pcT = torch.gather(stT.p, -1, cT[..., None])[..., 0]  # [N, n]  F^c(x̃)
    Dm = x[:, None, :] - decoys  # Δ = x - x̃, [N, n, d]
    # ∇p_c(x̃)ᵀΔ and ½ ΔᵀH̃Δ with H̃ = B̃W S̃ (B̃W)ᵀ: (B̃W)ᵀΔ = Wᵀ(ã ⊙ (g * Δ)), the linearised Δo
    g9T = _expand(params.g.reshape(N, 9), (n,))
    lin_o = torch.einsum("nsd,ndc->nsc", stT.a * _conv(g9T, Dm.reshape(-1, d), s).reshape(N, n, d), params.W)
    lin_T = (E * Dm).sum(-1)
    quad_T = 0.5 * torch.einsum("nsa,nsab,nsb->ns", lin_o, softmax_hessian(stT.p, cT), lin_o)
    moved_T = (Dm != 0).sum(-1)
    nb = _neighbour_index(s, x.device)  # [d, 9], value d = outside the image
    W_nb = torch.cat([params.W, params.W.new_zeros(N, 1, C)], 1)[:, nb]  # [N, d(j), 9, C]: W_{j+k,·}
    a0_nb = torch.cat([st0.a, st0.a.new_zeros(N, 1)], 1)[:, nb]  # [N, d, 9]
    g_k = params.g.reshape(N, 1, 9)
    g_mk = _flip(params.g).reshape(N, 1, 9)
    b0 = toy_jacobian_output(params, x)  # [N, d, C]: b_j = (BW)_{j·} at x

    def at_member(t_idx: Tensor) -> MemberTerms:
        """Quantities at the member chosen for each pixel j (x̃ = decoys[n, t_idx[n, j]])."""
        pick = lambda T: torch.gather(T, 1, t_idx.reshape(N, d, *([1] * (T.dim() - 2))).expand(N, d, *T.shape[2:]))
        a_t = pick(stT.a)  # [N, j, d]: ã of the member chosen for j
        a_nb = torch.gather(torch.cat([a_t, a_t.new_zeros(N, d, 1)], 2), 2, nb[None].expand(N, d, 9))  # ã_{j+k}
        p_t = pick(stT.p)  # [N, j, C]
        cj = c[:, None].expand(N, d)
        S_t = softmax_hessian(p_t, cj)  # [N, j, C, C]
        P_t = torch.diag_embed(p_t) - p_t[..., :, None] * p_t[..., None, :]
        rows_fixed = torch.einsum("njk,nk,njkc->njc", a_nb, g_mk[:, 0], W_nb)  # b̃_j = (B̃W)_{j·}
        rows_printed = torch.einsum("njk,nk,njkc->njc", a_nb, g_k[:, 0], W_nb)  # Eq. 17 as printed
        G_j = rows_fixed[..., None, :] @ P_t  # ∇_{x_j} p_{c'} at x̃, [N, j, 1, C]
        G_j = G_j[..., 0, :]
        pc = torch.gather(p_t, -1, cj[..., None])  # [N, j, 1]
        Gc = torch.gather(G_j, -1, cj[..., None])
        is_c = F.one_hot(cj, C).to(x.dtype)
        off = pc * G_j + p_t * Gc
        dP_printed = is_c * (1 - 2 * pc) * Gc + (1 - is_c) * off  # Eq. 18 as printed
        dP_fixed = is_c * (1 - 2 * pc) * Gc - (1 - is_c) * off  # ∂P̂_{·c}/∂x_j at x̃ (P̃_{·c} of Eq. 22)
        Pc_t = torch.gather(P_t, -1, cj[..., None, None].expand(N, d, C, 1))[..., 0]

        def C2(P: Tensor, g: Tensor) -> Tensor:  # max_k |g_k W_{j+k,·}·P_j|
            return (g * torch.einsum("njkc,njc->njk", W_nb, P)).abs().amax(-1)

        tj = lambda T: torch.gather(T, 1, t_idx)  # per-member [N, n] -> [N, j]
        H_jj = torch.einsum("nja,njab,njb->nj", rows_fixed, S_t, rows_fixed)
        delta = (-Dm).gather(1, t_idx[:, None, :])[:, 0]  # (x̃ - x)_j for the member of pixel j
        sum_a = a_nb.sum(-1)
        C2s = {"printed": C2(dP_printed, g_k), "fixed": C2(dP_fixed, g_mk), "alt": C2(Pc_t, g_mk)}
        bounds = {key: C2s[key] * delta.abs() * sum_a + C1 for key in C2s}
        p_tilde, lin, quad = tj(pcT), tj(lin_T), tj(quad_T)
        return MemberTerms(
            delta=delta,
            sum_a=sum_a,
            C2_printed=C2s["printed"],
            C2_fixed=C2s["fixed"],
            C2_alt=C2s["alt"],
            bound_printed=bounds["printed"],
            bound_fixed=bounds["fixed"],
            bound_alt=bounds["alt"],
            # the most generous reading of C2: the largest of the three, decoy by decoy
            bound_generous=torch.maximum(torch.maximum(bounds["printed"], bounds["fixed"]), bounds["alt"]),
            p_tilde=p_tilde,
            lin=lin,
            quad=quad,
            taylor_remainder=pc_x - (p_tilde + lin + quad),
            E_tilde=E.gather(1, t_idx[:, None, :])[:, 0],
            H_jj=H_jj,
            eq21=0.5 * delta * H_jj,
            eq17_printed=(rows_printed * dP_printed).sum(-1),
            eq17_fixed=(rows_fixed * dP_fixed).sum(-1),
            flips=(a_nb != a0_nb).to(x.dtype).sum(-1),
            n_moved=tj(moved_T),
            flip_part=((rows_fixed - b0) * Pc_t).sum(-1),  # exact share of E(x̃)_j - E(x)_j due to flips
        )

    plus = at_member(scores["t_plus"])
    minus = at_member(scores["t_minus"])
    # Minimal repair (a theorem, Eq. 16 + triangle inequality): drop the |(x̃ - x)_j| factor and read
    # P̃_{·c} as P̂_{·c} at x̃; then C2 Σ_k ã_{j+k} ≥ |E(x̃)_j| for every member.
    repair_plus = plus.C2_alt * plus.sum_a + C1
    repair_Z = repair_plus + minus.C2_alt * minus.sum_a + C1

    # ---- Proposition 1′ (a theorem): exact decomposition of E(x̃)_j - E(x)_j ------------------
    range_b = _range(b0)  # [N, d]
    range_do = _range(stT.o - st0.o[:, None, :])  # [N, n]
    smooth = KAPPA * range_b[:, None, :] * range_do[:, :, None]
    dA = (stT.a != st0.a[:, None, :]).to(x.dtype).reshape(-1, d)
    absg = _expand(_flip(params.g).abs().reshape(N, 9), (decoys.shape[1],))
    # Σ_k |Δa_{j+k}| |g_{-k}| range(W_{j+k}) is the forward correlation of |Δa|·rangeW with |g_{-k}|
    flip_w = _conv(absg, dA * _expand(rangeW, (decoys.shape[1],)), s).reshape(N, -1, d)
    flip_term = (pcT * (1 - pcT))[:, :, None] * flip_w
    corr_bound = smooth + flip_term
    # how close the smooth term comes to being attained: max over flip-free members of
    # |E(x̃)_j - E(x)_j| / smooth term (≤ 1 by Proposition 1′; 0 where no member qualifies)
    free = (flip_w == 0) & (smooth > 1e-12)  # (below, rounding noise would dominate the ratio)
    diff = (E - E[:, :1]).abs()
    smooth_tightness = torch.where(free, diff / smooth.clamp_min(1e-300), torch.zeros_like(diff)).amax(1)
    gather = lambda t_idx: torch.gather(corr_bound, 1, t_idx[:, None, :])[:, 0]
    gmax = (_flip(params.g).abs().reshape(N, 1, 9) * torch.cat([rangeW, rangeW.new_zeros(N, 1)], 1)[:, nb]).amax(-1)
    sum_a0 = _box(st0.a, s)
    return Proposition1Terms(
        target=c,
        E=E,
        Z=scores["Z"],
        Z_plus=scores["Z_plus"],
        Z_minus=scores["Z_minus"],
        t_plus=scores["t_plus"],
        t_minus=scores["t_minus"],
        C1=C1,
        p_x=pc_x,
        a0=st0.a,
        sum_a0=sum_a0,
        pixel_range=decoys.amax(1) - decoys.amin(1),  # spread of x_j over the population
        plus=plus,
        minus=minus,
        repair_plus=repair_plus,
        repair_Z=repair_Z,
        corr_smooth=smooth,
        corr_flip=flip_term,
        corr_bound=corr_bound,
        corr_Z=gather(scores["t_plus"]) + gather(scores["t_minus"]),
        corr_single=KAPPA * range_b * gmax * plus.delta.abs() * sum_a0,
        smooth_tightness=smooth_tightness,
    )


def population_from_decoys(decoys) -> tuple[Tensor, Tensor]:
    """Turn a :class:`dance.Decoys` of a :class:`ToyCNN` input into the population format of
    :func:`proposition1_terms`: ``(images [1, n+1, d], masks [1, n+1, d])`` with ``x`` first."""
    images, masks, original = decoys.images, decoys.masks, decoys.original
    if original.shape[1] != 1:
        raise ValueError(f"the toy takes one-channel images, got {original.shape[1]} channels")
    d = original[0, 0].numel()
    pop = torch.cat([original.reshape(1, d), images.reshape(-1, d)])[None]
    m = torch.cat([torch.zeros(1, d, dtype=torch.bool, device=masks.device), masks.reshape(-1, d)])[None]
    return pop, m


def proposition1_sweep(
    *,
    sides: Sequence[int] = (4, 6, 8, 12),
    n_classes: Sequence[int] = (2, 3, 10),
    eps_rel: Sequence[float] = (0.0, 0.01, 0.05, 0.2),
    kinds: Sequence[str] = ("extreme", "uniform", "spaced"),
    per_group: int = 8,
    weight_scale_range: tuple = (0.3, 10.0),
    seed: int = 0,
    progress: bool = False,
):
    """Proposition 1 on many random toys: every combination of image side, class count,
    tolerance ``ε = eps_rel · max_j m_j(x)`` and population kind gets ``per_group`` random
    networks (``g``, ``W``, ``b``, ``x`` and the weight scale, log-uniform in
    ``weight_scale_range``, all drawn afresh).

    Each pixel is evaluated under both readings of the population (``reading="all"``: every
    member, Eq. 3; ``reading="own"``: ``x`` plus the members whose mask contains the pixel).

    Returns:
        A ``pandas.DataFrame`` with one row per (network, pixel, reading) and most of the
        :meth:`Proposition1Terms.columns`, plus ``instance``, ``side``, ``C``,
        ``eps_rel``, ``epsilon``, ``kind``, ``weight_scale``, ``reading``, ``F_gap_bound`` (the
        proved bound on ``|p_c(x) - p_c(x̃)|``) and ``corr_ok`` (whether every member obeyed
        Proposition 1′).
    """
    import numpy as np
    import pandas as pd

    gen = torch.Generator().manual_seed(int(seed))
    frames = []
    instance = 0
    groups = [(s, C, e, k) for s in sides for C in n_classes for e in eps_rel for k in kinds]
    keys = ["Z", "Z_plus", "Z_minus", "C1", "delta", "sum_a", "sum_a0", "C2_printed", "C2_fixed", "C2_alt",
            "bound_printed", "bound_fixed", "bound_alt", "bound_generous", "bound_minus_printed",
            "bound_minus_fixed", "bound_minus_alt", "bound_minus_generous", "corr_Z", "corr_single",
            "smooth_tightness",
            "repair_plus", "repair_Z", "flip_part", "pixel_range",
            "p_x", "p_tilde", "lin", "quad", "taylor_remainder", "E_tilde", "eq21", "eq17_printed",
            "eq17_fixed", "H_jj", "flips", "n_moved"]
    for gi, (side, C, er, kind) in enumerate(groups):
        s_lo, s_hi = (math.log(v) for v in weight_scale_range)
        scale = torch.exp(s_lo + (s_hi - s_lo) * torch.rand(per_group, generator=gen, dtype=torch.float64))
        params = ToyParams.random(per_group, side, C, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)),
                                  weight_scale=scale)
        x = torch.rand(per_group, side * side, generator=gen, dtype=torch.float64)
        st = toy_forward(params, x)
        eps = er * st.m.amax(-1)
        decoys, masks = decoy_population(params, x, eps, kind=kind, n_random=9,
                                         seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        dm = (toy_forward(params, decoys).m - st.m[:, None]).abs().amax(-1)  # [N, n] achieved deviation
        for reading, mk in (("all", None), ("own", masks)):
            R = proposition1_terms(params, x, decoys, masks=mk)
            diff = (R.E - R.E[:, :1]).abs()
            corr_ok = (diff <= R.corr_bound * (1 + 1e-9) + 1e-15).all(1)  # per pixel, every member
            dev_t = torch.gather(dm, 1, R.t_plus)
            terms = R.columns()
            cols = {k: terms[k].reshape(-1).numpy() for k in keys}
            cols["F_gap_bound"] = (dev_t / 4 * _range(params.W).sum(-1, keepdim=True)).reshape(-1).numpy()
            cols["corr_ok"] = corr_ok.reshape(-1).numpy()
            df = pd.DataFrame(cols)
            df["instance"] = np.repeat(np.arange(instance, instance + per_group), side * side)
            df["pixel"] = np.tile(np.arange(side * side), per_group)
            df["side"], df["C"], df["eps_rel"], df["kind"], df["reading"] = side, C, er, kind, reading
            df["epsilon"] = np.repeat(eps.numpy(), side * side)
            df["weight_scale"] = np.repeat(scale.numpy(), side * side)
            frames.append(df)
        instance += per_group
        if progress and (gi + 1) % max(1, len(groups) // 6) == 0:
            print(f"  {gi + 1}/{len(groups)} groups, {instance} networks", file=sys.stderr, flush=True)
    return pd.concat(frames, ignore_index=True)


def counterexample_proposition1(scale: float = 1.0, epsilon: float = 0.05) -> dict:
    """A hand-built toy on which Proposition 1 (as stated, Eq. 22 constants) fails.

    3×3 image, filter ``g = [[0,0,0],[0,1,-1],[0,0,0]]`` (so ``(g*x)_i = x_i - x_{i+right}``),
    two classes with weights ``scale · W0``. At the centre pixel ``j`` no output that ``j``
    feeds is active, so ``E(x)_j = 0 = C1``; the upward 1×1 decoy at ``j`` activates output
    ``j`` (by at most ``epsilon``) and ``E(x̃)_j`` jumps to ``p_c(1-p_c)(W_{jc} - W_{jc'})``,
    which is first order in ``scale`` while ``C2`` is second order *when* ``P̃_{·c}`` is read as
    ``∂P̂_{·c}/∂x`` (printed and fixed readings): those bounds fail once ``scale`` is small enough
    (the printed one already at ``scale = 1``, the fixed one from ``scale ≈ 0.5``). Read as
    ``P̂_{·c}(x̃)`` (``bound_alt``), ``C2`` is first order too and the bound holds at every scale;
    :func:`counterexample_near_kink` fails under every reading.

    Returns:
        dict with ``params``, ``x``, ``decoys`` and the :class:`Proposition1Terms` ``terms``
        (read at pixel ``j = 4``).
    """
    g = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    W0 = torch.zeros(9, 2, dtype=torch.float64)
    W0[:, 0] = torch.linspace(-1, 1, 9, dtype=torch.float64)
    W0[4] = torch.tensor([2.0, -2.0], dtype=torch.float64)
    params = ToyParams(g[None], (scale * W0)[None], torch.zeros(1, 2, dtype=torch.float64))
    # centre 0.4 < right neighbour 0.7 (output 4 inactive); left neighbour 0.2 < 0.4 (output 3 inactive)
    x = torch.tensor([[0.5, 0.6, 0.9, 0.2, 0.4, 0.7, 0.3, 0.8, 0.1]], dtype=torch.float64)
    lo, hi = feasible_shifts(params, x, epsilon)
    dec = x.clone()[:, None, :].repeat(1, 2, 1)
    dec[0, 1, 4] = x[0, 4] + hi[0, 4] * (1 - 1e-9)
    masks = torch.zeros(1, 2, 9, dtype=torch.bool)
    masks[0, 1, 4] = True
    terms = proposition1_terms(params, x, dec, target=0, masks=masks)
    return {"params": params, "x": x, "decoys": dec, "terms": terms, "hi": hi}


def counterexample_near_kink(epsilon: float = 0.01, scale: float = 1.0, x_centre: float = 0.69) -> dict:
    """A toy on which Proposition 1 fails under *every* reading, inside a full decoy population.

    The network of :func:`counterexample_proposition1`, but the centre pixel ``j = 4`` sits just
    below a kink: ``pre_j = x_j - x_{j+right} = x_centre - 0.7`` (``-0.01`` by default). Its
    upward 1×1 decoy moves ``j`` by ``Δ_j = 0.7 - x_centre + ε``, which switches output ``j`` on,
    so ``E(x̃)_j`` jumps by ``p̃_c(1 - p̃_c)(W_{jc} - W_{jc'})``, an amount that does not shrink
    with ``Δ_j``. Every right-hand side of Proposition 1 is ``C1 + O(Δ_j)`` with ``C1 = 0``.

    Args:
        epsilon: tolerance of Eq. 2 (absolute; the largest activation of ``x`` is about 0.9).
        scale: multiplies the dense weights. x_centre: the centre pixel's value (< 0.7).

    Returns:
        dict with ``params``, ``x``, ``decoys``, ``masks`` (the full ``"extreme"`` population:
        every pixel, both directions) and the :class:`Proposition1Terms` ``own`` and ``all`` (the
        two readings), read at pixel ``j = 4``.

    Example:
        >>> from dance_book.theory import counterexample_near_kink
        >>> t = counterexample_near_kink()["own"]
        >>> bool(t.Z[0, 4] > 10 * t.plus.bound_generous[0, 4])
        True
    """
    if not 0.0 < float(epsilon):
        raise ValueError(f"epsilon must be > 0 (exact decoys give Z = 0), got {epsilon}")
    if not 0.0 < float(x_centre) < 0.7:
        raise ValueError(f"x_centre must lie in (0, 0.7) so that output j starts inactive, got {x_centre}")
    g = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    W0 = torch.zeros(9, 2, dtype=torch.float64)
    W0[:, 0] = torch.linspace(-1, 1, 9, dtype=torch.float64)
    W0[4] = torch.tensor([2.0, -2.0], dtype=torch.float64)
    params = ToyParams(g[None], (scale * W0)[None], torch.zeros(1, 2, dtype=torch.float64))
    x = torch.tensor([[0.5, 0.6, 0.9, 0.2, float(x_centre), 0.7, 0.3, 0.8, 0.1]], dtype=torch.float64)
    decoys, masks = decoy_population(params, x, float(epsilon), kind="extreme")
    own = proposition1_terms(params, x, decoys, target=0, masks=masks)
    every = proposition1_terms(params, x, decoys, target=0)
    return {"params": params, "x": x, "decoys": decoys, "masks": masks, "own": own, "all": every}


def segment_decomposition(params: ToyParams, x: Tensor, pixel: Tensor, delta: Tensor, target, nodes: int = 12) -> dict:
    """``E(x + δ e_j)_j - E(x)_j`` split exactly along the segment ``x_t = x + t δ e_j``, ``t ∈ [0, 1]``.

    Between kinks (``t`` where a pre-activation of a neighbour ``i = j + k`` crosses 0) the
    activation pattern is fixed, so ``d/dt E(x_t)_j = δ H_jj(x_t)``; at a kink ``t_r`` only
    ``a_i`` jumps, and ``p`` is continuous, so ``E_j`` jumps by
    ``(a_i⁺ - a_i⁻) g_{-k} W_{i,·}ᵀ P̂_{·c}(x_{t_r})``. Hence

    ``E(x̃)_j - E(x)_j = δ ∫₀¹ H_jj(x_t) dt + Σ_r jump_r`` (``smooth + jumps``),

    with the integral computed piece by piece by Gauss-Legendre quadrature (the integrand is
    analytic on each piece). With no kink this is the mean-value form ``δ H_jj(ξ)``. Both end
    points must be off the kinks (no pre-activation exactly 0 at ``x`` or ``x + δ e_j``), where
    the convention ``a = 1{pre ≥ 0}`` makes the gradient one-sided.

    Args:
        params: ``N`` networks. x: ``[N, d]``. pixel: LongTensor ``[N]`` (``j`` per network).
        delta: ``[N]`` shifts. target: class ``c`` (int or LongTensor ``[N]``).
        nodes: quadrature nodes per piece.

    Returns:
        dict of ``[N]`` tensors ``change`` (left side, from the closed-form gradient), ``smooth``,
        ``jumps``, ``n_kinks``; and ``[N, pieces * nodes]`` tensors ``H`` (``H_jj`` at the nodes)
        and ``C2_sum_a`` (``C2_fixed(x_t) · Σ_k a_{j+k}(x_t)`` at the nodes, ``≥ |H|`` by the
        triangle inequality).
    """
    import numpy as np

    x = _check_x(params, x)
    if x.dim() != 2:
        raise ValueError(f"x must be [N, d], got {tuple(x.shape)}")
    N, d, s = params.n, params.d, params.side
    pixel = torch.as_tensor(pixel, dtype=torch.long)
    delta = torch.as_tensor(delta, dtype=x.dtype)
    if pixel.shape != (N,) or delta.shape != (N,):
        raise ValueError(f"pixel and delta must have shape [N={N}], got {tuple(pixel.shape)} and {tuple(delta.shape)}")
    c = _target(params, target, (N,), x.device)
    rows = torch.arange(N)
    nb = _neighbour_index(s, x.device)[pixel]  # [N, 9]: i = j + k, or d outside
    inside = nb < d
    gam = _flip(params.g).reshape(N, 9)  # weight of x_j in pre_{j+k} is g_{-k}
    pre0 = torch.cat([toy_forward(params, x).pre, x.new_zeros(N, 1)], 1).gather(1, nb)  # [N, 9]
    slope = gam * delta[:, None]
    with torch.no_grad():
        t_k = torch.where(slope != 0, -pre0 / torch.where(slope != 0, slope, torch.ones_like(slope)),
                          torch.full_like(pre0, -1.0))
    kink = inside & (t_k > 0) & (t_k < 1)
    t_kink = torch.where(kink, t_k, torch.ones_like(t_k))
    bounds = torch.cat([x.new_zeros(N, 1), torch.sort(t_kink, 1).values, x.new_ones(N, 1)], 1)  # [N, 11]
    gl_t, gl_w = (torch.as_tensor(v, dtype=x.dtype) for v in np.polynomial.legendre.leggauss(int(nodes)))
    left, right = bounds[:, :-1, None], bounds[:, 1:, None]  # [N, 10, 1]
    t_nodes = (left + (right - left) * (gl_t + 1) / 2).reshape(N, -1)  # [N, 10 * nodes]
    w_nodes = ((right - left) / 2 * gl_w).reshape(N, -1)
    e_j = F.one_hot(pixel, d).to(x.dtype)
    pts = x[:, None, :] + (t_nodes * delta[:, None])[..., None] * e_j[:, None, :]  # [N, P, d]
    H = toy_hessian_diag(params, pts, c)[rows, :, pixel]  # [N, P]
    smooth = delta * (w_nodes * H).sum(1)
    # C2_fixed(x_t) Σ_k a_{j+k}(x_t) at the nodes
    st = toy_forward(params, pts)
    BW = toy_jacobian_output(params, pts)[rows, :, pixel]  # [N, P, C]: b_j(x_t)
    S = softmax_hessian(st.p, c[:, None].expand(N, pts.shape[1]))
    dP = torch.einsum("npab,npb->npa", S, BW)  # ∂P̂_{·c}/∂x_j = S_c b_j
    W_nb = torch.cat([params.W, params.W.new_zeros(N, 1, params.n_classes)], 1)[rows[:, None], nb]  # [N, 9, C]
    C2 = (gam[:, None, :] * torch.einsum("nkc,npc->npk", W_nb, dP)).abs().amax(-1)
    a_nb = torch.cat([st.a, st.a.new_zeros(N, pts.shape[1], 1)], 2).gather(2, nb[:, None, :].expand(N, pts.shape[1], 9))
    C2_sum_a = C2 * a_nb.sum(-1)
    # jumps: at t_k, a_{j+k} switches from 1{slope < 0} to 1{slope > 0}
    x_kink = x[:, None, :] + (t_kink * delta[:, None])[..., None] * e_j[:, None, :]  # [N, 9, d]
    Pc = toy_forward(params, x_kink).P_hat[rows, :, :, c]  # [N, 9, C]: P̂_{·c} at each kink
    sign = torch.where(slope > 0, 1.0, -1.0).to(x.dtype)
    jump = sign * gam * torch.einsum("nkc,nkc->nk", W_nb, Pc)
    jumps = torch.where(kink, jump, torch.zeros_like(jump)).sum(1)
    x_end = x + delta[:, None] * e_j
    E0 = toy_gradient(params, x, c)[rows, pixel]
    E1 = toy_gradient(params, x_end, c)[rows, pixel]
    return {"change": E1 - E0, "smooth": smooth, "jumps": jumps, "n_kinks": kink.sum(1),
            "H": H, "C2_sum_a": C2_sum_a}
