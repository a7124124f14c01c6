"""Experiment code of the hyperparameter (c sweep, run time) and representation chapters, on a tiny configuration.

These check shapes, invariants and mathematical facts (the reference map is identical to itself,
decoys satisfy their constraint at the decoy layer, relative differences by hand), never the
paper's claims: those are measured and reported by the chapters.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import dance_book.experiments as E
import dance_book.zoo
from dance_book.experiments import claims as Cl
from dance_book.experiments import hyperparameters as H
from dance_book.experiments import store as St
from dance_book.experiments import representation as Rp
from dance_book.experiments import runtime as Rt
from dance_book.experiments.settings import PAPER_SMOKE

N = 2


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """Two images, cheap base methods, a private cache; a scale name of its own so that
    :func:`hyper.sweep_size` falls back to ``n_small``."""
    monkeypatch.setenv("DANCE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(H, "C_VALUES", (1e3, 1e4))  # the cheap end of the grid
    # 20 Adam steps per round instead of 200, and the shared decoys of N images instead of n_fidelity: these tests
    # check shapes and identities, which hold at any step budget and N
    return dataclasses.replace(E.CI, scale="tiny", n_small=N, n_fidelity=N, smoothgrad_samples=2,
                               ig_steps=2, extra={"adam_steps": 20})


def test_c_sweep_shapes_and_identities(tiny, tmp_path):
    result = H.c_sweep(tiny)
    methods = list(E.METHODS)
    assert result["n"] == N and result["c_values"] == (1e3, 1e4) and result["reference_c"] == 1e4
    dec = result["decoys"]
    assert len(dec) == 2 * N
    # Constraint satisfaction: every kept decoy is within epsilon at the decoy layer.
    assert (dec.dev_over_eps_max <= 1.0).all() and (dec.n_decoys > 0).all()
    sf = result["fidelity"]
    assert len(sf) == len(methods) * 3 * N and np.isfinite(sf.S_F).all()
    sim = result["similarity"]
    assert len(sim) == len(methods) * 3 * N
    ref = sim[sim.c == 1e4]
    # A map compared with itself: Spearman and SSIM are exactly 1.
    np.testing.assert_allclose(ref.spearman, 1.0, atol=1e-6)
    np.testing.assert_allclose(ref.ssim, 1.0, atol=1e-6)
    assert ((sim.spearman >= -1 - 1e-9) & (sim.spearman <= 1 + 1e-9)).all()
    for (method, setting), h in result["heatmaps"].items():
        assert method in methods and h.shape == (min(N, H.N_SHOW), 64, 64)
        assert float(h.min()) >= 0.0 and float(h.max()) <= 1.0
    # The second call is read from the cache.
    assert any(p.name.startswith("hyper-c-sweep") for p in (tmp_path / "cache").iterdir())
    again = H.c_sweep(tiny)
    assert again["fidelity"].equals(sf)

    summary = H.c_summary(result)
    assert len(summary) == 2 * len(methods)
    at_ref = summary[summary.c == 1e4]
    assert (at_ref.diff_vs_ref == 0).all() and (at_ref.spearman_mean > 1 - 1e-6).all()
    verdict = H.insensitivity(result)
    assert list(verdict.method) == methods and (verdict.margin > 0).all()
    assert (verdict.worst_c == 1e3).all() and (verdict.sim_c == 1e3).all()

    rows = H.claims(tiny)
    assert len(rows) == 2 * len(methods)
    for row in rows:
        assert isinstance(row, Cl.Claim) and row.n == N and row.chapter == "hyperparameters.md"
        assert row.supports in (True, False, None) and isinstance(row.value, float)


def test_c_sweep_needs_the_reference(tiny):
    with pytest.raises(ValueError, match="reference c"):
        H.c_sweep(tiny, c_values=(10.0, 100.0))


def test_overrides_only_change_what_differs():
    assert H._overrides(E.CI, E.CI.decoys.c) == {}
    assert H._overrides(E.CI, 10.0) == {"c": 10.0}


def test_runtime_is_measured_once_per_build(tiny, monkeypatch):
    # Every chapter of a build (the hyperparameters chapter, the claims page) reads one measurement: a new
    # process finds it in the build's cache instead of timing again; it never enters the results store.
    monkeypatch.setattr(Rt, "ROUNDS", 1)
    first = Rt.runtime(tiny)
    monkeypatch.setattr(Rt, "_MEMO", {})  # as in another kernel of the same build
    monkeypatch.setattr(Rt, "measure_runtime", lambda *a, **k: pytest.fail("timed again"))
    again = Rt.runtime(tiny)
    pd.testing.assert_frame_equal(again["times"], first["times"])
    assert "runtime" in St.NOT_STORED


def test_runtime_measures_and_memoises(tiny, monkeypatch):
    monkeypatch.setattr(Rt, "ROUNDS", 1)
    torch.set_num_threads(2)
    try:
        result = Rt.runtime(tiny)  # times with Rt.THREADS whatever the caller's setting ...
        assert torch.get_num_threads() == 2  # ... and gives the caller's setting back
    finally:
        torch.set_num_threads(1)
    assert Rt.runtime(tiny) is result  # once per process
    t = result["times"]
    assert (t.wall > 0).all() and (t.cpu >= 0).all() and (t["round"] == 0).all()
    table = Rt.runtime_table(result).set_index("quantity")
    assert table.loc["map: Gradient", "ratio_to_gradient"] == 1.0
    # A DANCE map is timed as all decoys of the image plus the maps on them: never less than the decoys.
    for method in E.METHODS.values():
        for col in ("median", "wall_median", "cpu_median"):
            assert table.loc[f"DANCE map: {method}", col] >= table.loc["all decoys of the image (batched Adam)", col]
    np.testing.assert_allclose(table.loc["decoy: amortised (batched Adam)", "median"] * result["n_decoys"],
                               table.loc["all decoys of the image (batched Adam)", "median"], rtol=1e-9)
    assert result["clock"] == "cpu"  # the tests run on the CPU
    info = result["machine"]
    assert info["torch_threads"] == Rt.THREADS and info["usable_cores"] >= 1
    rows = Rt.claims(tiny)
    assert len(rows) == 5 and all(r.n == 1 and r.ci_low <= r.value <= r.ci_high for r in rows)
    # Only the paper's procedure (its stop at the first non-zero penalty) is judged; the book's stopping
    # rule and the line search are context.
    assert [r.counts for r in rows] == [True, True, False, False, False]
    assert "paper's stopping rule" in rows[0].measure and "not the paper's" in rows[2].measure
    q = result["quality"].set_index("solver")
    assert list(q.index) == ["book's Adam (stall stop)", "paper's Adam (first non-zero penalty)", "line search"]
    assert (q["max deviation / epsilon"] <= 1.0).all() and (q["decoys"] > 0).all()
    # The paper's rule stops each decoy at its first non-zero penalty: never more passes than the book's.
    assert q.loc["paper's Adam (first non-zero penalty)", "passes"] <= q.loc["book's Adam (stall stop)", "passes"]
    with pytest.raises(ValueError, match="rounds"):
        Rt.measure_runtime(tiny, rounds=0)
    with pytest.raises(ValueError, match="threads"):
        Rt.measure_runtime(tiny, threads=0)


def test_relative_differences_by_hand():
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.tensor([[[[1.0, 1.0]]]])                           # F(x) = (1, 2), max |F(x)| = 2
    images = torch.tensor([[[[1.0, 1.0]]], [[[0.5, 1.0]]], [[[1.0, 0.0]]]])
    r = Rp.relative_differences(model, x, images, ["0", "1"])
    # flatten: max|x| = 1, differences 0, 0.5, 1; linear: differences 0, 0.5, 2 over 2.
    torch.testing.assert_close(r, torch.tensor([[0.0, 0.0], [0.5, 0.25], [1.0, 1.0]]))
    assert not model.training and lin.weight.grad is None


def test_representation_study(tiny):
    result = Rp.representation_study(tiny, sigmas=(2.0, 4.0))
    t = result["table"]
    layers = result["layers"]
    assert layers[:10] == dance_book.zoo.layers("vgg-shapes")
    assert result["layer"] in layers and layers[-1] == "classifier.fc2"
    decoys = E.shared_decoys(tiny, tiny.main_model, N)
    masks = E.mask_family(E.load_model(tiny.main_model), E.load_images(tiny, 1).images, result["layer"], tiny)
    n_members = sum(len(d) for d in decoys) + 2 * N * masks.shape[0]
    assert len(t) == n_members * len(layers) and len(result["pixels"]) == n_members
    at_layer = t[(t.kind == "decoy") & (t.layer == result["layer"])]
    # The decoys' own constraint, relative epsilon at the decoy layer.
    assert (at_layer.r <= result["epsilon_relative"] * (1 + 1e-5)).all()
    assert (t.r >= 0).all() and (result["pixels"].l1 > 0).all()
    keys = Rp.key_layers(result)
    assert keys == {"first_pool": "features.pool2", "last": "classifier.fc2"}
    summary = Rp.layer_summary(result)
    assert len(summary) == len(layers) * 3
    assert summary[summary.kind == "decoy"].ci_low.notna().all()
    rows = Rp.claims(tiny)
    assert len(rows) == 3 and all(r.n == N and r.supports in (True, False, None) for r in rows)


def test_insensitivity_reads_hodges_lehmann_like_the_claims():
    """The table reads the declared rule for S_F differences (Hodges-Lehmann), not the mean: one outlying image
    makes c = 1e3 the worst by the mean, while by the Hodges-Lehmann estimate c = 1e5 is."""
    n, ref = 8, np.arange(8) * 0.1
    shift = {1e3: np.r_[np.full(7, 0.01), 1.0], 1e4: np.zeros(n), 1e5: np.full(n, 0.05)}
    sf, sim = [], []
    for method in E.METHODS:
        for c, d in shift.items():
            sf += [dict(setting=c, method=method, image=i, S_F=ref[i] + d[i]) for i in range(n)]
            sim += [dict(c=c, method=method, image=i, spearman=0.9, ssim=0.9) for i in range(n)]
        sf += [dict(setting="none", method=method, image=i, S_F=ref[i] - 0.2) for i in range(n)]
        sim += [dict(c="none", method=method, image=i, spearman=0.5 + 0.01 * i, ssim=0.5) for i in range(n)]
    dec = pd.DataFrame([dict(c=c, movement=0.1, dev_over_eps_max=0.5, dropped=0, steps_run=3) for c in shift])
    result = dict(c_values=tuple(shift), reference_c=1e4, fidelity=pd.DataFrame(sf), similarity=pd.DataFrame(sim),
                  decoys=dec, n=n)
    verdict = H.insensitivity(result)
    assert (verdict.worst_c == 1e5).all() and (verdict.interval == "hodges-lehmann").all()
    assert verdict.worst_diff.to_numpy() == pytest.approx(0.05)
    assert verdict.worst_mean.to_numpy() == pytest.approx(0.05)  # the mean reading of the same c, beside it
    assert verdict.decoy_effect.to_numpy() == pytest.approx(0.2) and verdict.decoy_effect_mean.to_numpy() == pytest.approx(0.2)
    # the margin is 0.5 sd of S_F at the reference; c = 1e3's HL interval lies inside it although its mean is 0.134
    assert verdict.margin.to_numpy() == pytest.approx(H.EQUIVALENCE_D * float(np.std(ref, ddof=1)))


def test_runtime_times_one_round_under_the_paper_smoke_switch(monkeypatch):
    # The smoke run's numbers mean nothing: one round; CI and paper scale time ROUNDS.
    seen = []
    monkeypatch.setattr(Rt, "_MEMO", {})
    monkeypatch.setattr(Rt, "cached", lambda name, config, compute: seen.append(config["rounds"]))
    for settings in (PAPER_SMOKE, E.CI, E.PAPER):
        Rt.runtime(settings)
    assert seen == [1, Rt.ROUNDS, Rt.ROUNDS] and Rt.ROUNDS > 1


def test_the_c_claims_powered_run_gives_the_counted_rows(tiny, monkeypatch):
    """With a powered run (here 3 images; the sweep's 2 are its pilot), the counted c rows are the powered sweep's,
    the sweep's are context, and N follows the claims page's plan for the pilot, capped by the budget."""
    pilot_rows = H.claims(tiny)  # the fixture's scale has no powered run
    assert all(r.counts and r.n == N for r in pilot_rows)
    monkeypatch.setattr(H, "POWERED_SCALES", ("tiny",))
    monkeypatch.setattr(H, "POWERED_COST_PER_IMAGE_S", 1.0)
    monkeypatch.setattr(H, "POWERED_BUDGET_S", 3.0)
    size = H.powered_size(tiny)
    assert size["needed"] == Cl.planned_n(pilot_rows) and size["n"] == 3 and size["powered"]
    assert H.powered_rule(tiny).startswith(f"N = 3 images (the rule asks for {size['needed']}")
    rows = H.claims(tiny)
    counted = [r for r in rows if r.counts]
    assert len(counted) == len(pilot_rows) and all(r.n == 3 and "powered run" in r.claim for r in counted)
    context = [r for r in rows if not r.counts]
    assert len(context) == len(pilot_rows) and all(r.n == N and "pilot of the powered run" in r.claim for r in context)
    powered = H.powered_sweep(tiny)
    assert powered["n"] == 3
    # the pilot's images are the powered sweep's first ones
    pilot = H.c_sweep(tiny)["fidelity"].sort_values(["setting", "method", "image"], key=lambda s: s.astype(str))
    first = powered["fidelity"][powered["fidelity"].image < N].sort_values(["setting", "method", "image"],
                                                                            key=lambda s: s.astype(str))
    np.testing.assert_allclose(first.S_F.to_numpy(), pilot.S_F.to_numpy(), rtol=1e-5, atol=1e-6)
    assert not H.powered_size(dataclasses.replace(tiny, extra={**tiny.extra, "smoke": True}))["powered"]
