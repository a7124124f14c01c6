"""Tests of dance_book.theory: closed forms against torch autograd (float64), the theorems of the
theory chapters asserted on random instances, and the counterexamples asserted as facts."""
import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import dance
from dance_book import theory as T
from dance_book.theory import proposition1 as T1

DT = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many small batched ops: one intra-op thread is ~10x faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rand_x(n, d, seed, *pop):
    return torch.rand(n, *pop, d, dtype=DT, generator=torch.Generator().manual_seed(seed))


def autograd_forward(params, x):
    """p(x) through the *module* (nn.Conv2d + nn.Linear), for an independent autograd reference."""
    return torch.stack([params.module(i)(x[i].reshape(-1, 1, params.side, params.side)) for i in range(params.n)])


# ------------------------------------------------------------------------------------ toy network


def test_module_and_batched_forward_agree():
    params = T.ToyParams.random(5, side=6, n_classes=4, seed=0, weight_scale=3.0)
    x = rand_x(5, 36, 1, 3)
    p_module = autograd_forward(params, x)
    st = T.toy_forward(params, x)
    assert torch.allclose(p_module, st.p, atol=1e-14)
    pre = torch.stack([torch.nn.functional.conv2d(x[i].reshape(-1, 1, 6, 6), params.g[i][None, None], padding=1).reshape(3, 36)
                       for i in range(5)])
    assert torch.allclose(pre, st.pre, atol=1e-14)
    assert torch.equal(st.a, (pre >= 0).to(DT))


def test_module_params_roundtrip():
    params = T.ToyParams.random(1, side=4, n_classes=3, seed=2)
    back = params.module(0).params()
    assert torch.equal(back.g, params.g) and torch.equal(back.W, params.W) and torch.equal(back.b, params.b)


@pytest.mark.parametrize("side,C", [(3, 2), (5, 3), (6, 10)])
def test_jacobian_eq15_matches_autograd(side, C):
    n = 12
    params = T.ToyParams.random(n, side=side, n_classes=C, seed=side, weight_scale=2.0)
    x = rand_x(n, side * side, 3)
    B = T.toy_jacobian(params, x)
    for i in range(n):
        net = params.module(i)
        J = torch.autograd.functional.jacobian(
            lambda z: net.relu(net.conv(z.reshape(1, 1, side, side))).reshape(-1), x[i])  # [j, i]
        assert torch.allclose(B[i], J.t(), atol=1e-14)


@pytest.mark.parametrize("side,C", [(3, 2), (5, 3), (8, 10)])
def test_gradient_eq16_matches_autograd(side, C):
    n, pop = 40, 4
    params = T.ToyParams.random(n, side=side, n_classes=C, seed=10 + side, weight_scale=4.0)
    x = rand_x(n, side * side, 4, pop)
    target = torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(0))
    E = T.toy_gradient(params, x, target)
    xr = x.clone().requires_grad_(True)
    p = autograd_forward(params, xr)  # [n, pop, C]
    pc = p.gather(-1, target[:, None, None].expand(n, pop, 1)).sum()
    (g,) = torch.autograd.grad(pc, xr)
    assert torch.allclose(E, g, atol=1e-13)
    # Eq. 16 literally: B W P̂_{·c} with the dense B of Eq. 15
    B = T.toy_jacobian(params, x[:, 0])
    st = T.toy_forward(params, x[:, 0])
    Pc = st.P_hat[torch.arange(n), :, target]
    assert torch.allclose(torch.einsum("nij,njc,nc->ni", B, params.W, Pc), E[:, 0], atol=1e-13)
    # all classes at once
    G = T.toy_class_gradients(params, x)
    assert torch.allclose(G.gather(-1, target[:, None, None, None].expand(n, pop, side * side, 1))[..., 0], E, atol=1e-13)


@pytest.mark.parametrize("side,C", [(3, 3), (4, 5), (5, 2)])
def test_hessian_eq17_18_matches_autograd(side, C):
    n = 8
    params = T.ToyParams.random(n, side=side, n_classes=C, seed=20 + side, weight_scale=4.0)
    x = rand_x(n, side * side, 5)
    c = T.toy_forward(params, x).p.argmax(-1)
    H = T.toy_hessian(params, x, c)
    H17 = T.toy_hessian_eq17(params, x, c)
    Hd = T.toy_hessian_diag(params, x, c)
    for i in range(n):
        net = params.module(i)
        ref = torch.autograd.functional.hessian(lambda z: net(z.reshape(1, 1, side, side))[0, c[i]], x[i])
        assert torch.allclose(H[i], ref, atol=1e-13)
        assert torch.allclose(H17[i], ref, atol=1e-13)
        assert torch.allclose(Hd[i], ref.diagonal(), atol=1e-13)


def test_printed_eq17_18_are_wrong_and_why():
    """Eq. 17 writes g_k where B_{j,j+k} = a_{j+k} g_{-k}; Eq. 18 drops the minus sign of
    ∂(-p_c p_{c'}). Each slip alone changes the Hessian of a generic instance, for every class
    count including C = 2 (the sign) and for any filter not symmetric under a 180° rotation (the
    index); the index slip is harmless for symmetric filters."""
    for C in (2, 4):
        params = T.ToyParams.random(4, side=5, n_classes=C, seed=7, weight_scale=4.0)
        x = rand_x(4, 25, 8)
        c = T.toy_forward(params, x).p.argmax(-1)
        H = T.toy_hessian(params, x, c)
        scale = H.abs().amax()
        assert (T.toy_hessian_eq17(params, x, c, paper_sign=True) - H).abs().amax() > 1e-1 * scale
        assert (T.toy_hessian_eq17(params, x, c, paper_index=True) - H).abs().amax() > 1e-1 * scale
    sym = T.ToyParams((params.g + T1._flip(params.g)) / 2, params.W, params.b)
    Hs = T.toy_hessian(sym, x, c)
    assert torch.allclose(T.toy_hessian_eq17(sym, x, c, paper_index=True), Hs, atol=1e-14)


def _bilinear_ratio(o, u, v, c):
    """|uᵀ ∇²_o p_c v| / (range(u) range(v)) for batches [.., C]."""
    S = T.softmax_hessian(torch.softmax(o, -1), c)
    return torch.einsum("za,zab,zb->z", u, S, v).abs() / (T1._range(u) * T1._range(v))


def test_lemma_b_constant_is_sharp():
    """|uᵀ ∇²_o p_c v| <= λ(p_c) range(u) range(v) <= KAPPA range(u) range(v), KAPPA = 1/(6√3), and
    KAPPA is attained: any other value of the constant fails one of the asserts below."""
    assert abs(T.KAPPA - 1 / (6 * math.sqrt(3))) < 1e-15
    p = torch.linspace(0, 1, 200001, dtype=DT)
    lam = T.softmax_bilinear_factor(p)
    assert abs(float(lam.max()) - T.KAPPA) < 1e-10
    gen = torch.Generator().manual_seed(0)
    for C in (2, 3, 5, 7):
        o = torch.randn(20000, C, generator=gen, dtype=DT) * 3
        u, v = torch.randn(2, 20000, C, generator=gen, dtype=DT)
        # extreme directions too: entries at the ends of the range
        u[:5000], v[:5000] = torch.randint(0, 2, (2, 5000, C), generator=gen).to(DT)
        c = torch.randint(0, C, (20000,), generator=gen)
        ratio = _bilinear_ratio(o, u, v, c)
        pc = torch.softmax(o, -1).gather(1, c[:, None])[:, 0]
        ok = T1._range(u) * T1._range(v) > 0
        assert bool((ratio[ok] <= T.softmax_bilinear_factor(pc)[ok] * (1 + 1e-9) + 1e-15).all())  # equality at C = 2
        assert bool((ratio[ok] <= T.KAPPA * (1 + 1e-12)).all())
    # attained: C classes with equal non-target logits, p_c = (3 - √3)/6, u = v = e_c
    for C in (2, 3, 6):
        pc = (3 - math.sqrt(3)) / 6
        o = torch.zeros(1, C, dtype=DT)
        o[0, 0] = math.log(pc * (C - 1) / (1 - pc))
        e = torch.zeros(1, C, dtype=DT)
        e[0, 0] = 1
        assert abs(float(_bilinear_ratio(o, e, e, torch.zeros(1, dtype=torch.long))) - T.KAPPA) < 1e-12
    # and it is the supremum found by an optimiser over (logits, u, v) for C = 3
    def neg(z):
        t = torch.tensor(z, dtype=DT).reshape(3, 3)
        return -float(_bilinear_ratio(t[:1], t[1:2], t[2:3], torch.zeros(1, dtype=torch.long)))
    best = min(minimize(neg, np.random.default_rng(s).normal(size=9), method="Nelder-Mead",
                        options={"maxiter": 4000, "xatol": 1e-10, "fatol": 1e-13}).fun for s in range(6))
    assert abs(-best - T.KAPPA) < 1e-6


# --------------------------------------------------------------------------------- decoys of the toy


@pytest.mark.parametrize("eps_rel", [0.0, 0.05, 0.3])
def test_feasible_shifts_are_the_exact_feasible_set(eps_rel):
    n, side = 30, 6
    params = T.ToyParams.random(n, side=side, n_classes=3, seed=1, weight_scale=2.0)
    x = rand_x(n, side * side, 2)
    st = T.toy_forward(params, x)
    eps = eps_rel * st.m.amax(-1)
    lo, hi = T.feasible_shifts(params, x, eps)
    assert bool((lo <= 0).all() and (hi >= 0).all())
    assert bool((x + lo >= 0).all() and (x + hi <= 1).all())
    eye = torch.eye(side * side, dtype=DT)

    def dev(shift):  # one single-pixel decoy per pixel
        xs = x[:, None, :] + shift[:, :, None] * eye
        return (T.toy_forward(params, xs).m - st.m[:, None]).abs().amax(-1), xs

    for end in (lo, hi):
        inside, _ = dev(end * (1 - 1e-9))
        assert bool((inside <= eps[:, None] + 1e-12).all())
        outside, xs = dev(end * (1 + 1e-6) + torch.sign(end) * 1e-9)
        out_of_box = (xs < 0).any(-1) | (xs > 1).any(-1)
        moved = end != 0
        # just past a nonzero end: infeasible (over epsilon or out of the box)
        assert bool(((outside > eps[:, None]) | out_of_box)[moved].all())


def test_exact_decoys_do_not_change_the_toy_gradient():
    """ε = 0: m(x̃) = m(x) fixes p and (away from ties) the activation pattern, so E(x̃) = E(x):
    the decoy-enhanced gradient score of the toy is identically zero."""
    params = T.ToyParams.random(20, side=8, n_classes=5, seed=3, weight_scale=3.0)
    x = rand_x(20, 64, 4)
    for kind in ("extreme", "uniform", "spaced"):
        dec, masks = T.decoy_population(params, x, 0.0, kind=kind, n_random=5, seed=1)
        moved = (dec != x[:, None]).any(-1).sum()
        assert int(moved) > 0  # exact decoys that really move exist
        st, stT = T.toy_forward(params, x), T.toy_forward(params, dec)
        assert torch.allclose(stT.m, st.m[:, None].expand_as(stT.m), atol=1e-13, rtol=0)
        E = T.toy_gradient(params, dec, st.p.argmax(-1))
        assert torch.allclose(E, E[:, :1].expand_as(E), atol=1e-14)


@pytest.mark.parametrize("kind", ["extreme", "uniform", "spaced"])
def test_populations_are_feasible(kind):
    params = T.ToyParams.random(10, side=7, n_classes=3, seed=5)
    x = rand_x(10, 49, 6)
    st = T.toy_forward(params, x)
    eps = 0.1 * st.m.amax(-1)
    dec, masks = T.decoy_population(params, x, eps, kind=kind, n_random=4, seed=2)
    assert torch.equal(dec[:, 0], x)
    assert bool(((dec != x[:, None]) <= masks).all())  # moves only inside its mask
    dm = (T.toy_forward(params, dec).m - st.m[:, None]).abs().amax(-1)
    assert bool((dm <= eps[:, None] * (1 + 1e-12) + 1e-15).all())
    assert bool((dec >= 0).all() and (dec <= 1).all())


def test_generate_decoys_on_the_toy_lie_in_the_exact_feasible_set():
    """Any decoy with deviation <= ε and a 1×1 mask (or pixels 3 apart) lies in [lo_j, hi_j]."""
    side = 5
    params = T.ToyParams.random(1, side=side, n_classes=3, seed=9, weight_scale=3.0)
    x = rand_x(1, side * side, 10)
    net = params.module(0)
    eps = 0.1 * float(T.toy_forward(params, x).m.max())
    before = [p.detach().clone() for p in net.parameters()]
    d = dance.generate_decoys(net, x.reshape(1, 1, side, side), "relu", epsilon=eps, patch_size=1, spacing=None,
                              solver=dance.Adam(steps=60))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    lo, hi = T.feasible_shifts(params, x, eps)
    shift = (d.images - d.original).reshape(len(d), -1)
    m = d.masks.reshape(len(d), -1)
    assert bool((d.deviation <= eps).all())
    assert bool((shift[~m] == 0).all())
    assert bool(((shift <= hi + 1e-12) & (shift >= lo - 1e-12)).all())


def test_decoy_enhanced_saliency_on_the_toy_equals_the_closed_form_Z():
    """dance.DecoyEnhanced(Saliency) on a ToyCNN gives the range Z of Eq. 3 computed from Eq. 16."""
    from captum.attr import Saliency

    side = 5
    params = T.ToyParams.random(1, side=side, n_classes=3, seed=21, weight_scale=3.0)
    x = rand_x(1, side * side, 22)
    net = params.module(0)
    eps = 0.1 * float(T.toy_forward(params, x).m.max())
    c = int(T.toy_forward(params, x).p.argmax())
    expl = dance.DecoyEnhanced(Saliency(net), layer="relu", epsilon=eps, patch_size=1, spacing=None, solver=dance.Adam(steps=40))
    Z_map, decoys = expl.attribute(x.reshape(1, 1, side, side), target=c, return_decoys=True)
    pop, masks = T.population_from_decoys(decoys[0])
    assert pop.shape == (1, len(decoys[0]) + 1, side * side) and torch.equal(pop[0, 0], x[0])
    R = T.proposition1_terms(params, x, pop, target=c)
    assert torch.allclose(Z_map.reshape(1, -1), R.Z, atol=1e-13)


# ----------------------------------------------------------------------------------- Proposition 1


def test_proposition1_terms_match_autograd():
    side, C, n = 5, 4, 3
    params = T.ToyParams.random(n, side=side, n_classes=C, seed=11, weight_scale=5.0)
    x = rand_x(n, side * side, 12)
    st = T.toy_forward(params, x)
    dec, masks = T.decoy_population(params, x, 0.2 * st.m.amax(-1), kind="spaced", n_random=3, seed=3)
    R = T.proposition1_terms(params, x, dec)
    c = R.target
    for i in range(n):
        net = params.module(i)
        for j in (0, 7, 12, 24):
            t = int(R.t_plus[i, j])
            xt = dec[i, t].clone()
            f = lambda z: net(z.reshape(1, 1, side, side))[0, c[i]]
            g = torch.autograd.functional.jacobian(f, xt)
            H = torch.autograd.functional.hessian(f, xt)
            D = x[i] - xt
            assert abs(float(R.plus.E_tilde[i, j] - g[j])) < 1e-13
            assert abs(float(R.plus.H_jj[i, j] - H[j, j])) < 1e-13
            assert abs(float(R.plus.eq17_fixed[i, j] - H[j, j])) < 1e-13
            assert abs(float(R.plus.lin[i, j] - g @ D)) < 1e-13
            assert abs(float(R.plus.quad[i, j] - 0.5 * D @ H @ D)) < 1e-13
            assert abs(float(R.plus.p_tilde[i, j] - f(xt).detach())) < 1e-14
            assert abs(float(R.plus.delta[i, j] - (xt[j] - x[i, j]))) == 0
            # Σ_k ã_{j+k} and C2 of Eq. 22 by explicit loops over the 9 offsets
            a_t = T.toy_forward(params.select(i), xt[None]).a[0].reshape(side, side)
            r, col = divmod(j, side)
            nbrs = [(r + u, col + v, u, v) for u in (-1, 0, 1) for v in (-1, 0, 1)
                    if 0 <= r + u < side and 0 <= col + v < side]
            assert float(R.plus.sum_a[i, j]) == sum(float(a_t[rr, cc]) for rr, cc, _, _ in nbrs)
            p_t = torch.softmax(net.fc(net.relu(net.conv(xt.reshape(1, 1, side, side))).reshape(1, -1))[0], -1)
            Pc = torch.diag(p_t)[:, c[i]] - p_t * p_t[c[i]]
            Pc = Pc.detach()
            alt = max(abs(float(params.g[i, 1 - u, 1 - v] * params.W[i, rr * side + cc] @ Pc)) for rr, cc, u, v in nbrs)
            assert abs(float(R.plus.C2_alt[i, j]) - alt) < 1e-14
            # P̃_{·c} = ∂P̂_{·c}/∂x_j at x̃ by autograd, P̂_{·c}(x) = p_c (e_c - p)
            def Pcol(z):
                pz = net(z.reshape(1, 1, side, side))[0]
                return pz[c[i]] * (torch.nn.functional.one_hot(c[i], C).to(DT) - pz)
            dP = torch.autograd.functional.jacobian(Pcol, xt)[:, j]
            fixed = max(abs(float(params.g[i, 1 - u, 1 - v] * params.W[i, rr * side + cc] @ dP)) for rr, cc, u, v in nbrs)
            assert abs(float(R.plus.C2_fixed[i, j]) - fixed) < 1e-13


def test_proposition1_terms_is_a_frozen_dataclass_with_both_members():
    """Fields by name, frozen; the minimising member's terms are those of ``t_minus``, and the
    table columns list the maximising member's bounds and the minimising member's as ``bound_minus_*``."""
    params = T.ToyParams.random(3, side=5, n_classes=3, seed=15, weight_scale=4.0)
    x = rand_x(3, 25, 16)
    dec, masks = T.decoy_population(params, x, 0.2 * T.toy_forward(params, x).m.amax(-1), kind="uniform", seed=2)
    R = T.proposition1_terms(params, x, dec, masks=masks)
    assert isinstance(R, T.Proposition1Terms) and isinstance(R.minus, T.MemberTerms)
    with pytest.raises(dataclasses.FrozenInstanceError):
        R.Z = R.Z_plus
    pick = lambda t: R.E.gather(1, t[:, None, :])[:, 0]
    assert torch.equal(R.plus.E_tilde, pick(R.t_plus)) and torch.equal(R.minus.E_tilde, pick(R.t_minus))
    assert torch.allclose(R.Z_minus, R.E[:, 0] - R.minus.E_tilde, atol=1e-15)
    assert torch.equal(R.minus.delta, (dec - x[:, None]).gather(1, R.t_minus[:, None, :])[:, 0])
    cols = R.columns()
    assert all(v.shape == (3, 25) for v in cols.values())
    for key in ("printed", "fixed", "alt", "generous"):
        assert torch.equal(cols[f"bound_{key}"], getattr(R.plus, f"bound_{key}"))
        assert torch.equal(cols[f"bound_minus_{key}"], getattr(R.minus, f"bound_{key}"))
    assert torch.equal(R.plus.bound_generous, torch.maximum(torch.maximum(R.plus.bound_printed, R.plus.bound_fixed),
                                                             R.plus.bound_alt))


def test_flip_part_is_the_exact_share_of_activation_flips():
    params = T.ToyParams.random(6, side=6, n_classes=4, seed=13, weight_scale=4.0)
    x = rand_x(6, 36, 14)
    st = T.toy_forward(params, x)
    dec, masks = T.decoy_population(params, x, 0.2 * st.m.amax(-1), kind="extreme")
    R = T.proposition1_terms(params, x, dec, masks=masks)
    b = T.toy_jacobian_output(params, x)  # b_j at x
    p_t = T.toy_forward(params, dec).p.gather(1, R.t_plus[..., None].expand(6, 36, 4))  # p at x̃ of pixel j
    c = R.target
    Pc = lambda p: p.gather(-1, c[:, None, None].expand(*p.shape[:-1], 1)) * (torch.nn.functional.one_hot(c, 4)[:, None].to(DT) - p)
    smooth = (b * (Pc(p_t) - Pc(st.p[:, None]))).sum(-1)
    assert torch.allclose(R.plus.flip_part + smooth, R.plus.E_tilde - R.E[:, 0], atol=1e-14)
    assert float(R.plus.flip_part[R.plus.flips == 0].abs().max()) < 1e-14
    assert int((R.plus.flips > 0).sum()) > 0


def small_sweep():
    return T.proposition1_sweep(sides=(4, 7), n_classes=(2, 5), eps_rel=(0.0, 0.05, 0.3),
                                kinds=("extreme", "spaced"), per_group=4, seed=1)


def test_corrected_bounds_are_theorems_on_random_instances():
    df = small_sweep()
    assert df.instance.nunique() == 2 * 2 * 3 * 2 * 4
    tol = 1e-12
    assert bool(df.corr_ok.all())  # Proposition 1′ for every member and pixel
    assert bool((df.Z <= df.corr_Z * (1 + 1e-9) + tol).all())
    assert bool((df.Z <= df.repair_Z + tol).all())
    assert bool((df.Z_plus <= df.repair_plus + tol).all())
    # F^c(x) vs F^c(x̃): |Δp_c| <= (||Δm||_∞ / 4) Σ_j range(W_j)
    assert bool(((df.p_x - df.p_tilde).abs() <= df.F_gap_bound + tol).all())
    # the Proposition-1-shaped special case: own 1×1 decoy, no activation flip
    own = df[(df.reading == "own") & (df.kind == "extreme") & (df.flips == 0) & (df.n_moved <= 1)]
    assert len(own) > 100
    assert bool((own.Z_plus <= own.corr_single * (1 + 1e-9) + tol).all())
    # exact decoys: Z = 0
    assert float(df[df.eps_rel == 0].Z.abs().max()) < 1e-14
    # the smooth term of Proposition 1′ is nearly attained on flip-free members: a KAPPA four times
    # too large (the old 2/(3√3)) would leave this ratio near 1/4, a smaller one breaks corr_ok
    assert 0.9 < float(df.smooth_tightness.max()) <= 1 + 1e-9


def test_sweep_is_deterministic():
    a = T.proposition1_sweep(sides=(4,), n_classes=(3,), eps_rel=(0.1,), kinds=("uniform",), per_group=3, seed=5)
    b = T.proposition1_sweep(sides=(4,), n_classes=(3,), eps_rel=(0.1,), kinds=("uniform",), per_group=3, seed=5)
    assert a.equals(b)


def test_counterexample_to_proposition1_as_stated():
    """Centre pixel with no active output it feeds (C1 = 0); its 1×1 decoy switches one on."""
    for scale in (1.0, 0.5, 0.1):
        t = T.counterexample_proposition1(scale=scale)["terms"]
        j = 4
        assert float(t.C1[0, j]) == 0.0 and float(t.plus.flips[0, j]) >= 1
        assert float(t.Z[0, j]) > float(t.plus.bound_printed[0, j])
        if scale <= 0.5:
            assert float(t.Z[0, j]) > float(t.plus.bound_fixed[0, j])
        assert float(t.Z[0, j]) <= float(t.corr_Z[0, j]) * (1 + 1e-9)
    # first order in the weight scale for Z, second order for the C2 term
    z = [float(T.counterexample_proposition1(scale=s)["terms"].Z[0, 4]) for s in (0.02, 0.01)]
    b = [float(T.counterexample_proposition1(scale=s)["terms"].plus.bound_fixed[0, 4]) for s in (0.02, 0.01)]
    assert 1.9 < z[0] / z[1] < 2.1 and b[0] / b[1] > 3.8  # (here even third order: p -> (1/2, 1/2))


def test_near_kink_counterexample_fails_every_reading():
    """pre_j = -0.01: the upward decoy crosses the kink, E_j jumps by O(1), every bound is O(Δ_j)."""
    for eps in (0.01, 0.001):
        ce = T.counterexample_near_kink(epsilon=eps)
        assert bool((ce["decoys"] >= 0).all() and (ce["decoys"] <= 1).all())
        dev = (T.toy_forward(ce["params"], ce["decoys"]).m - T.toy_forward(ce["params"], ce["x"]).m[:, None]).abs().amax(-1)
        assert float(dev.max()) <= eps
        for reading in ("own", "all"):
            t = {k: float(v[0, 4]) for k, v in ce[reading].columns().items()}
            assert t["C1"] == 0.0 and t["flips"] >= 1 and t["Z"] == t["Z_plus"]
            for key in ("printed", "fixed", "alt", "generous"):
                assert t["Z"] > 10 * t[f"bound_{key}"]                                  # one-sided
                assert t["Z"] > 10 * (t[f"bound_{key}"] + t[f"bound_minus_{key}"])      # two-sided
            assert t["Z"] <= t["corr_Z"] * (1 + 1e-9)                                   # Proposition 1′ holds


def test_old_counterexample_needs_the_derivative_reading():
    """The first hand-built counterexample fails for P̃ = ∂P̂/∂x but not for P̃ = P̂(x̃)."""
    for scale in (1.0, 0.1, 0.01):
        t = T.counterexample_proposition1(scale=scale)["terms"]
        assert float(t.Z[0, 4]) <= float(t.plus.bound_alt[0, 4])


def test_segment_decomposition_is_exact():
    """E(x̃)_j - E(x)_j = δ ∫ H_jj + Σ kink jumps; without kinks it is the mean-value form."""
    n, side = 60, 6
    params = T.ToyParams.random(n, side=side, n_classes=3, seed=31, weight_scale=3.0)
    x = rand_x(n, side * side, 32)
    lo, hi = T.feasible_shifts(params, x, 0.2 * T.toy_forward(params, x).m.amax(-1))
    pix = torch.randint(0, side * side, (n,), generator=torch.Generator().manual_seed(33))
    c = T.toy_forward(params, x).p.argmax(-1)
    for ends in (hi, lo):
        R = T.segment_decomposition(params, x, pix, ends[torch.arange(n), pix] * (1 - 1e-6), c)
        assert float((R["change"] - R["smooth"] - R["jumps"]).abs().max()) < 1e-13
        assert bool((R["H"].abs() <= R["C2_sum_a"] * (1 + 1e-12) + 1e-15).all())
        assert int((R["n_kinks"] > 0).sum()) > 0 and int((R["n_kinks"] == 0).sum()) > 0
        assert float(R["jumps"][R["n_kinks"] == 0].abs().max()) == 0.0


# ---------------------------------------------------------------------------------------- Figure A7


def test_maxpool_hand_example():
    """1×1 conv (identity), ReLU, 2×2 max-pool on [[.1,.2],[.3,.9]]: the three non-maximal pixels
    can take any value in [0, 0.9]; the maximal one cannot move."""
    net = T.ConvPoolToy(torch.ones(1, 1, dtype=DT), pool=2)
    x = torch.tensor([[0.1, 0.2], [0.3, 0.9]], dtype=DT)
    r = T.maxpool_exact_decoys(net, x, grid=1001, n_mc=2000)
    assert r["free"].tolist() == [[True, True], [True, False]]
    assert torch.allclose(r["length"], torch.tensor([[0.9, 0.9], [0.9, 0.0]], dtype=DT))
    assert torch.allclose(r["hi"][r["free"]], torch.full((3,), 0.9, dtype=DT))
    assert int(r["n_points"][1, 1]) == 1 and r["local_dim"] == 3
    assert abs(r["volume_fraction"] - 0.9 ** 3) < 4 * 0.9 ** 1.5 * 0.1 ** 0.5 / math.sqrt(2000) + 0.02


@pytest.mark.parametrize("H,k,pool,relu", [(5, 2, 2, True), (6, 3, 2, True), (7, 2, 3, False)])
def test_maxpool_intervals_match_grid(H, k, pool, relu):
    gen = torch.Generator().manual_seed(H)
    net = T.ConvPoolToy(torch.randn(k, k, generator=gen, dtype=DT), pool=pool, relu=relu)
    x = torch.rand(H, H, generator=gen, dtype=DT)
    grid = 801
    r = T.maxpool_exact_decoys(net, x, grid=grid)
    assert bool(((r["grid_fraction"] - r["length"]).abs() <= 2.0 / (grid - 1) + 1e-12).all())
    # the interval end points of free pixels are themselves exact decoys
    xs = x.reshape(-1)
    free = r["free"].reshape(-1)
    for ends in (r["lo"], r["hi"]):
        imgs = xs.repeat(int(free.sum()), 1)
        imgs[torch.arange(int(free.sum())), free.nonzero()[:, 0]] = ends.reshape(-1)[free]
        rep = net(imgs.reshape(-1, 1, H, H)).reshape(imgs.shape[0], -1)
        assert bool(((rep - net(x[None, None]).reshape(1, -1)).abs() <= 1e-12).all())
    assert bool((r["n_points"].reshape(-1)[~free] >= 1).all())


# ----------------------------------------------------------------------------------- input checks


def test_bad_inputs_raise_clear_errors_and_inputs_are_not_modified():
    params = T.ToyParams.random(2, side=4, n_classes=3, seed=0)
    with pytest.raises(ValueError, match="g must have shape"):
        T.ToyParams(torch.zeros(2, 2, 2, dtype=DT), params.W, params.b)
    with pytest.raises(ValueError, match="square number"):
        T.ToyParams(params.g, torch.zeros(2, 15, 3, dtype=DT), params.b)
    with pytest.raises(TypeError, match="floating-point"):
        T.ToyParams(params.g.long(), params.W, params.b)
    x = rand_x(2, 16, 0)
    keep = x.clone()
    with pytest.raises(ValueError, match=r"x must have shape \[N=2"):
        T.toy_gradient(params, x[:1], 0)
    with pytest.raises(TypeError, match="dtype"):
        T.toy_gradient(params, x.float(), 0)
    with pytest.raises(ValueError, match="target must be in"):
        T.toy_gradient(params, x, 5)
    with pytest.raises(ValueError, match="epsilon must be finite and >= 0"):
        T.feasible_shifts(params, x, -1.0)
    with pytest.raises(ValueError, match="kind must be"):
        T.decoy_population(params, x, 0.1, kind="nope")
    dec, _ = T.decoy_population(params, x, 0.1)
    with pytest.raises(ValueError, match=r"decoys\[:, 0\] must be x"):
        T.proposition1_terms(params, x, dec.flip(1))
    T.proposition1_terms(params, x, dec)
    assert torch.equal(x, keep)
    with pytest.raises(TypeError, match="ConvPoolToy"):
        T.maxpool_exact_decoys(torch.nn.Identity(), torch.rand(3, 3))
