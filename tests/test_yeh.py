"""Tests of dance_book.yeh: Yeh et al.'s propositions asserted on small networks with closed-form
explanations, Corollary 2.1's counterexamples and the corrected l-layer constant."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from dance.metrics import sampled_sensitivities
from dance_book import yeh as Y

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def test_softplus_gradient_and_lipschitz_bound():
    net = Y.SoftplusMLP.random(d=16, hidden=12, n_out=2, seed=0, scale=3.0)
    x = torch.rand(6, 1, 4, 4, dtype=DT, generator=torch.Generator().manual_seed(1))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xr)[:, 1].sum(), xr)
    assert torch.allclose(net.gradient(x, 1), g, atol=1e-14)
    L = net.lipschitz(1)
    r = 0.1
    dist = sampled_sensitivities(lambda z, t: net.gradient(z, 1), x, None, radius=r, n_samples=64,
                                 normalize=None, clamp=None, seed=3)
    from dance.metrics import linf_ball_samples
    u = (linf_ball_samples(x, r, 64, seed=3, clamp=None) - x[None]).flatten(2).norm(dim=2).t()  # [B, n]
    assert bool((dist <= L * u * (1 + 1e-5) + 1e-7).all())  # Definition 2.4 on every sample
    s_avg, s_max = dist.mean(1), dist.amax(1)
    assert bool((s_avg <= s_max).all() and (s_max <= L * r * 4 * (1 + 1e-5)).all())  # √d = 4


def test_yeh_corollary21_constant_is_too_small_for_two_layers():
    W1 = torch.tensor([[1.0]], dtype=DT)
    w2 = torch.tensor([0.1], dtype=DT)
    f, grad, lip = Y.two_layer_softplus(W1, w2)
    yeh = Y.yeh_corollary21_constant([W1, w2[None]])
    assert abs(yeh - 0.01 / 4) < 1e-15
    r = 0.01
    x0 = torch.zeros(1, 1, dtype=DT)
    change = float((grad(x0 + r) - grad(x0)).abs())
    assert change > 4 * yeh * r  # the corollary's S_MAX <= L r fails by a factor > 4
    assert change <= lip * r
    xr = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xr).sum(), xr)
    assert torch.allclose(g, grad(x0), atol=1e-15)


def test_relu_mlp_gradient_and_exact_smoothgrad():
    net = Y.ReLUMLP.random(d=9, hidden=20, seed=2)
    x = torch.rand(4, 1, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xr)[:, 0].sum(), xr)
    assert torch.allclose(net.gradient(x), g, atol=1e-14)
    exact = net.smoothgrad(x, sigma=0.2)
    mc = net.smoothgrad_mc(x, sigma=0.2, n=40000, seed=1)
    # each coordinate is a mean of 40000 bounded terms: 5 standard errors
    bound = 5 * net.W.abs().sum(0).max() * net.V.abs().max() / math.sqrt(40000)
    assert float((exact - mc).abs().max()) < float(bound)
    # common random numbers: same noise for every row and call
    assert torch.equal(net.smoothgrad_mc(x, sigma=0.2, n=5, seed=4)[:1], net.smoothgrad_mc(x[:1], sigma=0.2, n=5, seed=4))


def test_kink_free_balls_have_constant_gradient():
    net = Y.ReLUMLP.random(d=9, hidden=6, seed=1)
    x = torch.rand(200, 1, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(3))
    free = net.kink_free(x, 0.1)
    assert 0 < int(free.sum()) < 200
    dist = sampled_sensitivities(lambda z, t: net.gradient(z), x, None, radius=0.1, n_samples=200, normalize=None, clamp=None, seed=0)
    assert float(dist[free].max()) == 0.0
    # a ball that does meet a kink: moving to the kink's far side changes the gradient
    assert float(dist[~free].amax(1).max()) > 0


def test_prop24_holds_exactly_for_a_finite_kernel():
    net = Y.ReLUMLP.random(d=9, hidden=40, seed=3, scale=2.0)
    gen = torch.Generator().manual_seed(5)
    noise = 0.3 * torch.randn(16, 1, 3, 3, generator=gen, dtype=DT)

    def sg(z, t):  # Φ_k(y) = mean_s ∇f(y + noise_s)
        return torch.stack([net.gradient(z + e) for e in noise]).mean(0)

    for i in range(3):
        x = torch.rand(1, 1, 3, 3, generator=gen, dtype=DT)
        lhs, rhs, per = Y.smoothing_terms(sg, lambda z, t: net.gradient(z), x, noise, radius=0.2, n_samples=30, seed=i)
        assert bool((lhs <= rhs * (1 + 1e-5) + 1e-7).all())
        assert float(lhs.max()) <= float(per.amax(1).mean()) * (1 + 1e-5) + 1e-7  # S_MAX form
        assert float(lhs.mean()) <= float(per.mean()) * (1 + 1e-5) + 1e-7  # S_AVG form


def test_prop23_elementwise_product_bound():
    net = Y.SoftplusMLP.random(d=16, hidden=10, seed=4, scale=4.0)
    x = torch.rand(5, 1, 4, 4, dtype=DT, generator=torch.Generator().manual_seed(2))
    r = 0.1
    phi = lambda z, t: net.gradient(z)
    prod = lambda z, t: z * net.gradient(z)
    d_phi = sampled_sensitivities(phi, x, None, radius=r, n_samples=40, normalize=None, clamp=None, seed=1)
    d_prod = sampled_sensitivities(prod, x, None, radius=r, n_samples=40, normalize=None, clamp=None, seed=1)
    from dance.metrics import linf_ball_samples
    u = (linf_ball_samples(x, r, 40, seed=1, clamp=None) - x[None]).flatten(2).norm(dim=2).t()
    rhs = Y.product_bound(x, net.gradient(x), d_phi, u)
    assert bool((d_prod <= rhs * (1 + 1e-5) + 1e-7).all())
    # the estimator-level statement of Prop. 2.3 with d(r) = √d r for the L∞ ball
    dx = x.flatten(1).norm(dim=1)
    dr = 4 * r
    bound = (dx + dr) * d_phi.amax(1) + dr * net.gradient(x).flatten(1).norm(dim=1)
    assert bool((d_prod.amax(1) <= bound * (1 + 1e-5)).all())


def test_prop31_median_and_mean_are_optimal():
    gen = torch.Generator().manual_seed(0)
    net = Y.ReLUMLP.random(d=6, hidden=15, seed=6, scale=3.0)
    x = torch.rand(1, 6, dtype=DT, generator=gen)
    samples = net.gradient(x + 0.5 * (2 * torch.rand(51, 6, generator=gen, dtype=DT) - 1))
    med = samples.median(0).values
    mean = samples.mean(0)
    J = Y.smoothing_objectives(samples, torch.stack([med, mean]))
    # L1 objective as a linear program: min mean_t Σ_i s_ti, s_ti >= ±(φ_i - Φ_ti)
    n, d = samples.shape
    S = samples.numpy()
    c = np.concatenate([np.zeros(d), np.ones(n * d) / n])
    A, b = [], []
    for t in range(n):
        for i in range(d):
            for sign in (1, -1):  # |y_i - s_ti| <= e_ti as two inequalities
                row = np.zeros(d + n * d)
                row[i] = sign
                row[d + t * d + i] = -1
                A.append(row)
                b.append(sign * S[t, i])
    lp = linprog(
        c, A_ub=np.array(A), b_ub=np.array(b), bounds=[(None, None)] * d + [(0, None)] * (n * d), method="highs"
    )
    assert abs(lp.fun - float(J["J1"][0])) < 1e-8
    pert = med + 0.05 * torch.randn(200, d, generator=gen, dtype=DT)
    assert bool((Y.smoothing_objectives(samples, pert)["J1"] >= J["J1"][0] - 1e-12).all())
    # L2², the mean: J2(φ) = J2(mean) + ||φ - mean||² exactly
    pert2 = mean + 0.05 * torch.randn(200, d, generator=gen, dtype=DT)
    J2 = Y.smoothing_objectives(samples, pert2)["J2"]
    assert torch.allclose(J2, J["J2"][1] + (pert2 - mean).pow(2).sum(1), atol=1e-12)
    assert float(J["J2"][1]) <= float(J["J2"][0])
    # L2 with α = 1 is minimised by the geometric median, not the mean
    gm = Y.geometric_median(samples)
    assert float(Y.smoothing_objectives(samples, gm)["J21"][0]) <= float(J["J21"][1]) + 1e-12


def test_corollary21_average_sensitivity_itself_fails():
    """Not only the Lipschitz constant: the printed S_AVG <= L r fails (exact 1-D quadrature)."""
    W1 = torch.tensor([[1.0]], dtype=DT)
    w2 = torch.tensor([0.1], dtype=DT)
    _, grad, lip = Y.two_layer_softplus(W1, w2)
    r = 0.1
    s_avg, err = Y.avg_sensitivity_1d(grad, 0.0, r)
    assert err < 1e-12
    L = Y.yeh_corollary21_constant([W1, w2[None]])
    assert s_avg > 2.5 * L * r  # charitable reading
    assert s_avg > 10 * Y.yeh_corollary21_constant([W1, w2[None]], reading="literal") * r
    assert s_avg <= lip * r  # the corrected constant


def test_softplus_chain_gradient_and_l_layer_constant():
    gen = torch.Generator().manual_seed(4)
    violated = 0
    for depth, last in ((2, 1.0), (3, 1.0), (4, 0.05), (3, 0.003), (2, 0.01)):
        sizes = [6] + [5] * (depth - 1) + [1]
        ws = [torch.randn(sizes[i + 1], sizes[i], generator=gen, dtype=DT) / math.sqrt(sizes[i]) for i in range(depth)]
        ws[-1] = ws[-1] * last
        f, grad = Y.softplus_chain(ws)
        x = torch.rand(50, 6, generator=gen, dtype=DT)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xr).sum(), xr)
        assert torch.allclose(g, grad(x), atol=1e-14)
        y = x + 0.05 * torch.randn(50, 6, generator=gen, dtype=DT)
        ratio = float(((grad(y) - grad(x)).norm(dim=1) / (y - x).norm(dim=1)).max())
        assert ratio <= Y.softplus_chain_lipschitz(ws)  # the theorem
        violated += ratio > Y.yeh_corollary21_constant(ws)
    assert violated >= 2  # small last layers: Yeh fails
    # two layers: the recursion is at least the chapter's sharper two-layer constant
    W1 = torch.randn(4, 6, generator=gen, dtype=DT)
    w2 = torch.randn(4, generator=gen, dtype=DT)
    assert Y.softplus_chain_lipschitz([W1, w2[None]]) >= Y.two_layer_softplus(W1, w2)[2] - 1e-12
    with pytest.raises(ValueError, match="reading must be"):
        Y.yeh_corollary21_constant([W1], reading="nope")
