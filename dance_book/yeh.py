"""Yeh et al. (2019), for the book's Yeh chapter: small networks with closed-form gradients,
Lipschitz constants and Gaussian-smoothed gradients (:class:`SoftplusMLP`, :class:`ReLUMLP`),
plus the bound terms of their Propositions 2.2, 2.3, 2.4 / Corollary 2.2 and 3.1.
Checked against torch autograd in ``tests/test_theory.py``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "two_layer_softplus",
    "softplus_chain",
    "softplus_chain_lipschitz",
    "l2_ball_samples",
    "avg_sensitivity_l2",
    "avg_sensitivity_1d",
    "SoftplusMLP",
    "ReLUMLP",
    "yeh_corollary21_constant",
    "product_bound",
    "smoothing_terms",
    "smoothing_objectives",
    "geometric_median",
]

Tensor = torch.Tensor

# ---------------------------------------------------------------------------------------------
# Part 3: Yeh et al. (2019) — small networks with closed-form explanations
# ---------------------------------------------------------------------------------------------


def _images_to_flat(x: Tensor, d: int, name: str = "inputs") -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, 1, h, w] or [B, d], got {type(x).__name__}")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != d:
        raise ValueError(f"{name} must hold d={d} features per row, got shape {tuple(x.shape)}")
    return flat


class SoftplusMLP(nn.Module):
    """``f(x) = V softplus(W x + c)`` (one hidden layer, ``K`` outputs) with its closed-form
    gradient and a global Lipschitz constant of that gradient (Yeh et al.'s Proposition 2.2).

    Inputs are ``[B, 1, h, w]`` images (flattened inside) or ``[B, d]``.

    Args:
        W: ``[H, d]``, c: ``[H]``, V: ``[K, H]``.

    Example:
        >>> import torch
        >>> from dance_book.yeh import SoftplusMLP
        >>> net = SoftplusMLP.random(d=16, hidden=8, n_out=2, seed=0)
        >>> net.gradient(torch.rand(3, 1, 4, 4, dtype=torch.float64), 1).shape
        torch.Size([3, 1, 4, 4])
    """

    def __init__(self, W: Tensor, c: Tensor, V: Tensor):
        super().__init__()
        if W.dim() != 2 or c.shape != (W.shape[0],) or V.dim() != 2 or V.shape[1] != W.shape[0]:
            raise ValueError(f"need W [H, d], c [H], V [K, H]; got {tuple(W.shape)}, {tuple(c.shape)}, {tuple(V.shape)}")
        self.register_buffer("W", W.detach().clone())
        self.register_buffer("c", c.detach().clone())
        self.register_buffer("V", V.detach().clone())

    @classmethod
    def random(cls, d: int, hidden: int, n_out: int = 1, *, seed: int = 0, scale: float = 1.0,
               dtype: torch.dtype = torch.float64) -> "SoftplusMLP":
        gen = torch.Generator().manual_seed(int(seed))
        W = torch.randn(hidden, d, generator=gen, dtype=dtype) * scale / math.sqrt(d)
        c = torch.randn(hidden, generator=gen, dtype=dtype)
        V = torch.randn(n_out, hidden, generator=gen, dtype=dtype) * scale / math.sqrt(hidden)
        return cls(W, c, V)

    def forward(self, x: Tensor) -> Tensor:
        z = _images_to_flat(x, self.W.shape[1]) @ self.W.t() + self.c
        return F.softplus(z) @ self.V.t()

    def gradient(self, x: Tensor, target=0) -> Tensor:
        """``∇x f_target = Wᵀ (σ(z) ⊙ V_target)`` (``σ`` the logistic sigmoid), shaped like ``x``."""
        flat = _images_to_flat(x, self.W.shape[1])
        z = flat @ self.W.t() + self.c
        v = self.V[torch.as_tensor(target, device=x.device).long()]
        v = v.expand(flat.shape[0], -1) if v.dim() == 1 else v
        return ((torch.sigmoid(z) * v) @ self.W).reshape(x.shape)

    def lipschitz(self, target=0) -> float:
        """``‖W‖₂² · max_i |V_{target,i}| / 4`` ≥ ``sup ‖∇²f‖₂`` (``softplus'' ≤ 1/4``): a global
        Lipschitz constant of the gradient explanation for ``D = ρ = L2``."""
        return float(torch.linalg.matrix_norm(self.W, 2) ** 2 * self.V[int(target)].abs().max() / 4)


class ReLUMLP(nn.Module):
    """``f(x) = V relu(W x + c)`` with closed-form gradient and *exact* Gaussian-smoothed gradient.

    The SmoothGrad explanation with noise ``N(0, σ² I)`` is the gradient of ``f`` convolved with
    the Gaussian, here in closed form: ``E[1{w_iᵀ(x+n)+c_i > 0}] = Φ((w_iᵀx + c_i)/(σ‖w_i‖))``.

    Example:
        >>> import torch
        >>> from dance_book.yeh import ReLUMLP
        >>> net = ReLUMLP.random(d=16, hidden=32, seed=0)
        >>> x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
        >>> exact = net.smoothgrad(x, 0, sigma=0.3)
        >>> mc = net.smoothgrad_mc(x, 0, sigma=0.3, n=20000, seed=0)
        >>> bool((exact - mc).abs().max() < 0.05)
        True
    """

    def __init__(self, W: Tensor, c: Tensor, V: Tensor):
        super().__init__()
        if W.dim() != 2 or c.shape != (W.shape[0],) or V.dim() != 2 or V.shape[1] != W.shape[0]:
            raise ValueError(f"need W [H, d], c [H], V [K, H]; got {tuple(W.shape)}, {tuple(c.shape)}, {tuple(V.shape)}")
        self.register_buffer("W", W.detach().clone())
        self.register_buffer("c", c.detach().clone())
        self.register_buffer("V", V.detach().clone())
        self._independent = torch.Generator()

    @classmethod
    def random(cls, d: int, hidden: int, n_out: int = 1, *, seed: int = 0, scale: float = 1.0,
               dtype: torch.dtype = torch.float64) -> "ReLUMLP":
        gen = torch.Generator().manual_seed(int(seed))
        W = torch.randn(hidden, d, generator=gen, dtype=dtype) * scale / math.sqrt(d)
        c = torch.randn(hidden, generator=gen, dtype=dtype) * 0.5
        V = torch.randn(n_out, hidden, generator=gen, dtype=dtype) / math.sqrt(hidden)
        return cls(W, c, V)

    def forward(self, x: Tensor) -> Tensor:
        z = _images_to_flat(x, self.W.shape[1]) @ self.W.t() + self.c
        return torch.relu(z) @ self.V.t()

    def _v(self, target, n: int, device) -> Tensor:
        v = self.V[torch.as_tensor(target, device=device).long()]
        return v.expand(n, -1) if v.dim() == 1 else v

    def gradient(self, x: Tensor, target=0) -> Tensor:
        """``∇x f = Wᵀ (1{z > 0} ⊙ V_target)``, shaped like ``x``."""
        flat = _images_to_flat(x, self.W.shape[1])
        z = flat @ self.W.t() + self.c
        return (((z > 0).to(flat.dtype) * self._v(target, flat.shape[0], x.device)) @ self.W).reshape(x.shape)

    def kink_free(self, x: Tensor, radius: float) -> Tensor:
        """``[B]`` bool: no ReLU kink ``w_iᵀy + c_i = 0`` meets the ``L∞`` ball of ``radius`` around
        ``x`` (``|w_iᵀx + c_i| > radius · ‖w_i‖₁`` for all ``i``), so the gradient is exactly
        constant on the ball and its true max-sensitivity is 0."""
        flat = _images_to_flat(x, self.W.shape[1])
        z = flat @ self.W.t() + self.c
        return (z.abs() > float(radius) * self.W.abs().sum(1)).all(1)

    def smoothgrad(self, x: Tensor, target=0, *, sigma: float) -> Tensor:
        """Exact SmoothGrad ``E_{n~N(0,σ²I)} ∇f(x + n)`` (Yeh et al.'s ``Φ_k`` with a Gaussian kernel)."""
        flat = _images_to_flat(x, self.W.shape[1])
        z = flat @ self.W.t() + self.c
        prob = torch.special.ndtr(z / (float(sigma) * self.W.norm(dim=1)))
        return ((prob * self._v(target, flat.shape[0], x.device)) @ self.W).reshape(x.shape)

    def smoothgrad_mc(self, x: Tensor, target=0, *, sigma: float, n: int, seed: Optional[int] = 0) -> Tensor:
        """Monte Carlo SmoothGrad with ``n`` noise draws.

        ``seed`` an int: *common random numbers* — every row and every call uses the same ``n``
        noise vectors (a fixed finite kernel, for which Proposition 2.4 holds exactly).
        ``seed=None``: fresh independent noise for every row and call (SmoothGrad as used), drawn
        from the network's own generator, so a whole run is still reproducible.
        """
        flat = _images_to_flat(x, self.W.shape[1])
        B, d = flat.shape
        if seed is None:
            noise = torch.randn(B, n, d, generator=self._independent, dtype=flat.dtype).to(flat.device)
        else:
            gen = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(1, n, d, generator=gen, dtype=flat.dtype).to(flat.device).expand(B, n, d)
        z = (flat[:, None, :] + float(sigma) * noise) @ self.W.t() + self.c  # [B, n, H]
        act = (z > 0).to(flat.dtype).mean(1)
        return ((act * self._v(target, B, x.device)) @ self.W).reshape(x.shape)


def _spectral(w: Tensor) -> float:
    return float(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1) if w.dim() > 1 else w[None], 2))


def yeh_corollary21_constant(weights: Sequence[Tensor], reading: str = "charitable") -> float:
    """Yeh et al.'s Corollary 2.1 Lipschitz constant for ``f = σ(W_l σ(… σ(W_1 x)))`` with
    softplus ``σ``, printed as ``Π_i ‖W_i‖²/4``.

    Args:
        weights: ``W_1, …, W_l``.
        reading: ``"charitable"``: ``(Π_i ‖W_i‖₂²) / 4`` (the larger constant, used by the book);
            ``"literal"``: ``Π_i (‖W_i‖₂² / 4) = 4^{-l} Π_i ‖W_i‖₂²``.

    Returns:
        float.

    Example:
        >>> import torch
        >>> from dance_book.yeh import yeh_corollary21_constant
        >>> w = [torch.eye(2, dtype=torch.float64), 2 * torch.eye(2, dtype=torch.float64)]
        >>> yeh_corollary21_constant(w), yeh_corollary21_constant(w, reading="literal")
        (1.0, 0.25)
    """
    if reading not in ("charitable", "literal"):
        raise ValueError(f"reading must be 'charitable' or 'literal', got {reading!r}")
    out = 1.0
    for w in weights:
        out *= _spectral(w) ** 2 / (4 if reading == "literal" else 1)
    return out if reading == "literal" else out / 4


def softplus_chain(weights: Sequence[Tensor]):
    """``f(x) = σ(W_l σ(… σ(W_1 x)))`` (softplus ``σ``, no biases, ``W_l`` a row ``[1, h]``) and its
    gradient in closed form (backpropagation written out).

    Args:
        weights: ``W_1 [h_1, d]``, …, ``W_l [1, h_{l-1}]``.

    Returns:
        ``(f, grad)``: callables on ``[B, d]`` returning ``[B]`` and ``[B, d]``.

    Example:
        >>> import torch
        >>> from dance_book.yeh import softplus_chain
        >>> ws = [torch.randn(4, 3, dtype=torch.float64), torch.randn(1, 4, dtype=torch.float64)]
        >>> f, grad = softplus_chain(ws)
        >>> x = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
        >>> bool(torch.allclose(torch.autograd.grad(f(x).sum(), x)[0], grad(x)))
        True
    """
    if len(weights) < 1 or weights[-1].dim() != 2 or weights[-1].shape[0] != 1:
        raise ValueError("weights must be W_1, ..., W_l with the last one a row [1, h]")

    def f(x):
        h = x
        for w in weights:
            h = F.softplus(h @ w.t())
        return h[:, 0]

    def grad(x):
        h, zs = x, []
        for w in weights:
            z = h @ w.t()
            zs.append(z)
            h = F.softplus(z)
        g = torch.ones_like(zs[-1])
        for w, z in zip(reversed(weights), reversed(zs)):
            g = (g * torch.sigmoid(z)) @ w
        return g

    return f, grad


def softplus_chain_lipschitz(weights: Sequence[Tensor]) -> float:
    """A correct Lipschitz constant (``L2``) of ``∇f`` for :func:`softplus_chain`:
    ``L_l = ¼ Λ_l Σ_{i=1}^{l} Λ_i`` with ``Λ_i = Π_{k≤i} ‖W_k‖₂``.

    From the recursion ``M_i ≤ ¼ ‖W_i‖² Λ_{i-1}² + ‖W_i‖ M_{i-1}`` (``M_0 = 0``) for the Lipschitz
    constant of the Jacobian of ``h_i = σ(W_i h_{i-1})``, using ``0 < σ' < 1`` and ``σ'' ≤ ¼``.
    For ``l = 1`` it is Yeh et al.'s ``‖W_1‖²/4``; for ``l ≥ 2`` it adds ``¼ Λ_l Σ_{i<l} Λ_i``.

    Example:
        >>> import torch
        >>> from dance_book.yeh import softplus_chain_lipschitz
        >>> softplus_chain_lipschitz([2 * torch.eye(2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64) / 2 ** 0.5])
        2.0
    """
    lam, total = 1.0, 0.0
    for w in weights:
        lam *= _spectral(w)
        total += lam
    return lam * total / 4


def l2_ball_samples(x: Tensor, radius: float, n: int, seed: int = 0) -> Tensor:
    """``n`` points uniform in the ``L2`` ball of ``radius`` around each row of ``x [B, d]``:
    ``[n, B, d]`` (direction Gaussian, length ``radius · U^{1/d}``; same draws for every row)."""
    B, d = x.shape
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.randn(n, 1, d, generator=gen, dtype=x.dtype)
    u = u / u.norm(dim=-1, keepdim=True) * radius * torch.rand(n, 1, 1, generator=gen, dtype=x.dtype) ** (1.0 / d)
    return x[None] + u.to(x.device)


def avg_sensitivity_l2(grad, x: Tensor, radius: float, n: int, seed: int = 0) -> Tensor:
    """Monte Carlo ``S_AVG`` with ``ρ = D = L2`` and ``P_x`` uniform on the ``L2`` ball: the
    per-sample distances ``‖grad(y_t) - grad(x)‖₂``, ``[B, n]`` (mean over ``n`` estimates S_AVG)."""
    y = l2_ball_samples(x, radius, n, seed)
    g0 = grad(x)
    return torch.stack([(grad(yt) - g0).norm(dim=-1) for yt in y], 1)


def avg_sensitivity_1d(grad, x0: float, radius: float) -> tuple[float, float]:
    """Exact ``S_AVG`` in one dimension: ``(1/2r) ∫_{-r}^{r} |f'(x0 + u) - f'(x0)| du`` by adaptive
    quadrature (:func:`scipy.integrate.quad`). Returns ``(value, absolute error estimate)``."""
    from scipy.integrate import quad

    g0 = float(grad(torch.tensor([[float(x0)]], dtype=torch.float64))[0, 0])
    h = lambda u: abs(float(grad(torch.tensor([[float(x0) + u]], dtype=torch.float64))[0, 0]) - g0)
    left, e1 = quad(h, -radius, 0.0, epsabs=1e-14, epsrel=1e-12)
    right, e2 = quad(h, 0.0, radius, epsabs=1e-14, epsrel=1e-12)
    return (left + right) / (2 * radius), (e1 + e2) / (2 * radius)


def two_layer_softplus(W1: Tensor, w2: Tensor):
    """``f(x) = σ(w2ᵀ σ(W1 x))`` (softplus ``σ``, no biases; Corollary 2.1 with ``l = 2``).

    Returns:
        ``(f, grad, lipschitz)``: callables on ``[B, d]`` and a correct global Lipschitz constant
        of ``∇f`` for L2, ``‖W1‖₂² (‖w2‖₂² + ‖w2‖_∞) / 4`` (from
        ``∇²f = σ''(s) J w2 w2ᵀ Jᵀ + σ'(s) W1ᵀ diag(σ''(z) ⊙ w2) W1`` with ``J = W1ᵀ diag(σ'(z))``).
    """
    def f(x):
        return F.softplus(F.softplus(x @ W1.t()) @ w2)

    def grad(x):
        z = x @ W1.t()
        s = F.softplus(z) @ w2
        return torch.sigmoid(s)[:, None] * ((torch.sigmoid(z) * w2) @ W1)

    n1 = float(torch.linalg.matrix_norm(W1, 2)) ** 2
    lip = n1 * (float(w2.norm()) ** 2 + float(w2.abs().max())) / 4
    return f, grad, lip


def product_bound(x: Tensor, phi_x: Tensor, dist_phi: Tensor, step_norm: Tensor) -> Tensor:
    """Right-hand side of Yeh et al.'s Proposition 2.3 for one perturbation ``y = x + u``:

    ``D(y ⊙ Φ(y), x ⊙ Φ(x)) ≤ (d(x) + d(u)) · D(Φ(y), Φ(x)) + d(u) · d(Φ(x))`` with ``d = ‖·‖₂``.

    Args:
        x, phi_x: ``[B, ...]``; dist_phi: ``[B, n]`` distances ``D(Φ(y_t), Φ(x))``;
        step_norm: ``[B, n]`` the ``‖u_t‖₂``.

    Returns:
        ``[B, n]``.
    """
    dx = x.reshape(x.shape[0], -1).norm(dim=1)[:, None]
    dphi = phi_x.reshape(phi_x.shape[0], -1).norm(dim=1)[:, None]
    return (dx + step_norm) * dist_phi + step_norm * dphi


def smoothing_terms(explain_smooth, explain, x: Tensor, noise: Tensor, *, radius: float, n_samples: int, seed: int = 0):
    """Both sides of Yeh et al.'s Proposition 2.4 for a finite kernel (common random numbers).

    ``Φ_k(y) = mean_s Φ(y + noise_s)``. For each perturbation ``u_t`` of the ``L∞`` ball (drawn by
    :func:`dance.metrics.sampled_sensitivities` with ``seed``, so both sides see the same ``u_t``):

    ``lhs[t] = ‖Φ_k(x + u_t) - Φ_k(x)‖₂`` and ``rhs[t] = mean_s ‖Φ(x + noise_s + u_t) - Φ(x + noise_s)‖₂``.

    Args:
        explain_smooth: ``Φ_k`` as ``f(inputs, target) -> maps``; explain: ``Φ`` likewise.
        x: ``[1, C, H, W]`` one input. noise: ``[n_noise, C, H, W]``, the kernel's support points.

    Returns:
        ``(lhs [n_samples], rhs [n_samples], per_noise [n_noise, n_samples])``.
    """
    from dance.metrics import sampled_sensitivities

    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"x must be one input [1, C, H, W], got {tuple(x.shape)}")
    lhs = sampled_sensitivities(explain_smooth, x, None, radius=radius, n_samples=n_samples,
                                normalize=None, clamp=None, seed=seed)[0]
    per = torch.stack([
        sampled_sensitivities(explain, x + z[None], None, radius=radius, n_samples=n_samples,
                              normalize=None, clamp=None, seed=seed)[0]
        for z in noise  # one call per kernel point (each batched over the n_samples perturbations)
    ])
    return lhs, per.mean(0), per


def smoothing_objectives(samples: Tensor, phi: Tensor) -> dict:
    """Yeh et al.'s surrogate objectives (Eq. 3, ``AVG`` version) of a candidate ``φ``:

    ``J1 = mean_t ‖φ - Φ_t‖₁`` (``D = L1, α = 1``), ``J2 = mean_t ‖φ - Φ_t‖₂²`` (``D = L2, α = 2``)
    and ``J21 = mean_t ‖φ - Φ_t‖₂`` (``D = L2, α = 1``).

    Args:
        samples: ``[n, d]`` explanations ``Φ(x + u_t)``; phi: ``[d]`` or ``[m, d]`` candidates.
    """
    phi = phi[None] if phi.dim() == 1 else phi
    diff = phi[:, None, :] - samples[None]
    return {
        "J1": diff.abs().sum(-1).mean(1),
        "J2": diff.pow(2).sum(-1).mean(1),
        "J21": diff.norm(dim=-1).mean(1),
    }


def geometric_median(samples: Tensor, iters: int = 500, tol: float = 1e-12) -> Tensor:
    """Minimiser of ``mean_t ‖φ - Φ_t‖₂`` (Weiszfeld's iteration, started at the mean)."""
    phi = samples.mean(0)
    for _ in range(iters):  # iterations of a fixed-point map, not a loop over data
        w = 1.0 / (samples - phi).norm(dim=1).clamp_min(1e-15)
        new = (w[:, None] * samples).sum(0) / w.sum()
        if (new - phi).norm() < tol:
            return new
        phi = new
    return phi
