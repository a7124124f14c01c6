"""Equal population sizes (issue 12 §1): the decoys compared with blur / inpainting / noise / constant fills
have as many maps per image as they do, and the fidelity and control claims compare like with like.

The paper's optimised decoys give 2M + 1 maps per image (two directions per mask, plus the image), the
replacement populations M + 1; a pixelwise range grows with the population's size. ``"decoys_m"`` keeps one
decoy per mask, the direction chosen by a coin seeded per image.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

import dance_book.experiments as E
from dance.decoys import Decoys
from dance_book.experiments import control as C
from dance_book.experiments import fidelity as F
from dance_book.experiments import scores as Sc
from dance_book.experiments.maps import equal_size_populations, one_decoy_per_mask

pytestmark = pytest.mark.usefixtures("shapes_once")  # the experiment images are rendered once, not at every load


@pytest.fixture(scope="module")
def S(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DANCE_CACHE_DIR", str(tmp_path_factory.mktemp("dance-cache")))
    ci = E.settings("ci")
    mp.setattr(F, "POWERED_SCALES", ())  # the fidelity claim at these settings' own 2 images, no powered run
    # 8x8 patches: few masks and decoys, and 20 Adam steps per decoy round instead of 200 (as conftest's tiny: the
    # tests count maps and compare populations, which hold at any step budget), so that every population of two
    # images is computed in seconds
    yield dataclasses.replace(ci, n_fidelity=2, n_small=2, smoothgrad_samples=2, ig_steps=2,
                              decoys=dataclasses.replace(ci.decoys, patch_size=8), extra={**ci.extra, "adam_steps": 20})
    mp.undo()


def _toy(masks_signs, H=4, W=4, dropped=()):
    """A Decoys of a 1-channel HxW image: ``masks_signs`` kept (mask index, sign) rows, ``dropped`` the removed ones;
    mask ``j`` is pixel row ``j`` of the image. Decoy images are filled with a value that names the row."""
    def mask(j):
        m = torch.zeros(1, H, W, dtype=torch.bool)
        m[0, j] = True
        return m
    n = len(masks_signs)
    original = torch.zeros(1, 1, H, W)
    images = torch.stack([torch.where(mask(j), torch.full((1, H, W), 0.1 * (i + 1)), original[0])
                          for i, (j, _) in enumerate(masks_signs)])
    return Decoys(images=images, masks=torch.stack([mask(j) for j, _ in masks_signs]),
                  signs=torch.tensor([s for _, s in masks_signs]), deviation=torch.zeros(n),
                  movement=torch.arange(n, dtype=torch.float), epsilon=1.0, layer="l", original=original,
                  dropped=len(dropped),
                  dropped_masks=torch.stack([mask(j) for j, _ in dropped]) if dropped else torch.zeros(0, 1, H, W, dtype=torch.bool),
                  dropped_signs=torch.tensor([s for _, s in dropped], dtype=torch.long))


def _mask_keys(masks):
    return [tuple(m.flatten().nonzero().flatten().tolist()) for m in masks]


def test_one_decoy_per_mask_keeps_each_mask_once_and_picks_both_directions():
    full = _toy([(j, s) for j in range(4) for s in (1, -1)])
    before = {k: v.clone() for k, v in vars(full).items() if isinstance(v, torch.Tensor)}
    seen = set()
    for seed in range(20):
        sub = one_decoy_per_mask(full, seed)
        assert len(sub) == 4 and sorted(_mask_keys(sub.masks)) == sorted(set(_mask_keys(full.masks)))
        assert sub.dropped == 0 and sub.extra["fallback"] == 0
        # every kept decoy is one of the originals, with its own mask and sign
        for img, m, s in zip(sub.images, sub.masks, sub.signs):
            row = [i for i in range(len(full)) if torch.equal(full.images[i], img)]
            assert len(row) == 1 and torch.equal(full.masks[row[0]], m) and int(full.signs[row[0]]) == int(s)
        assert torch.equal(one_decoy_per_mask(full, seed).signs, sub.signs)  # seeded: the same coins again
        seen.add(tuple(sub.signs.tolist()))
    assert len(seen) > 1 and {1, -1} <= {s for signs in seen for s in signs}
    for k, v in before.items():  # nothing the caller passed changes
        assert torch.equal(getattr(full, k), v)


def test_one_decoy_per_mask_with_dropped_decoys():
    # mask 1 lost its up decoy, mask 2 both: mask 1 keeps its down decoy, mask 2 has none
    d = _toy([(0, 1), (0, -1), (1, -1), (3, 1), (3, -1)], dropped=[(1, 1), (2, 1), (2, -1)])
    for seed in range(10):
        sub = one_decoy_per_mask(d, seed)
        keys = _mask_keys(sub.masks)
        assert len(sub) == 3 and len(set(keys)) == 3
        assert sub.dropped == 1 and _mask_keys(sub.dropped_masks) == _mask_keys(_toy([(2, 1)]).masks)
        assert int(sub.signs[keys.index(_mask_keys(_toy([(1, 1)]).masks)[0])]) == -1
    # the coins of the surviving masks do not depend on which decoys were dropped
    full = _toy([(j, s) for j in range(4) for s in (1, -1)])
    for seed in range(10):
        a, b = one_decoy_per_mask(full, seed), one_decoy_per_mask(d, seed)
        sign = lambda sub, j: int(sub.signs[_mask_keys(sub.masks).index(_mask_keys(_toy([(j, 1)]).masks)[0])])  # noqa: E731
        assert sign(a, 0) == sign(b, 0) and sign(a, 3) == sign(b, 3)


def test_one_decoy_per_mask_bad_input():
    d = _toy([(0, 1), (0, -1)])
    with pytest.raises(TypeError, match="decoys"):
        one_decoy_per_mask(d.images, 0)
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="seed"):
            one_decoy_per_mask(d, bad)


def test_equal_size_population_has_m_plus_one_maps_each_mask_once(S):
    layer = S.layer(S.main_model)
    x = E.load_images(S, 2).images
    sub = Sc.population(S, S.main_model, layer, "decoys_m", 2)
    full = Sc.population(S, S.main_model, layer, "decoys", 2)
    blur = Sc.population(S, S.main_model, layer, "blur", 2, x)
    family = _mask_keys(E.mask_family(E.load_model(S.main_model), x, layer, S))
    for s, f, b in zip(sub, full, blur):
        assert f.dropped == 0 and len(f) == 2 * len(family)  # the paper's population: 2M decoys
        assert len(s) == len(b) == len(family)                # M decoys, M + 1 maps with the image
        assert sorted(_mask_keys(s.masks)) == sorted(family)  # each mask exactly once
    r = Sc.scores(S, S.main_model, layer, "gradient", "decoys_m", 2)
    rb = Sc.scores(S, S.main_model, layer, "gradient", "blur", 2)
    assert r["n_decoys"].tolist() == rb["n_decoys"].tolist() == [len(family)] * 2


def test_equal_size_population_does_not_depend_on_the_batch(S):
    layer = S.layer(S.main_model)
    two = Sc.population(S, S.main_model, layer, "decoys_m", 2)
    one = Sc.population(S, S.main_model, layer, "decoys_m", 1)
    assert torch.equal(one[0].images, two[0].images) and torch.equal(one[0].signs, two[0].signs)
    # image b's coins come from settings.seed + b, whatever else is in the batch
    shared = E.shared_decoys(S, S.main_model, 2)
    alone = one_decoy_per_mask(shared[1], S.seed + 1)
    assert torch.equal(alone.images, two[1].images) and torch.equal(alone.signs, two[1].signs)
    assert [torch.equal(a.signs, b.signs) for a, b in zip(equal_size_populations(shared, S.seed), two)] == [True, True]


def _sizes(S, df):
    """Maps per image of every population of a claims table, counted from the populations themselves."""
    layer = S.layer(S.main_model)
    n = S.n_fidelity
    return {k: [1] * n if k == "none" else [1 + len(p) for p in Sc.population(S, S.main_model, layer, k, n)]
            for k in df.population.unique()}


def _pair_readings(df):
    """Every ordered pair of (population, aggregate) combinations of a claims table, with the readings of its
    paired difference of S_F: the Hodges-Lehmann estimate and interval (every S_F measure since 2026-11-28) and
    the mean with its t-interval. Computed once per table: the claims are matched against it."""
    combos = [tuple(c) for c in df[["population", "aggregate"]].drop_duplicates().itertuples(index=False)]
    out = []
    for (pa, aa), (pb, ab) in itertools.permutations(combos, 2):
        d = Sc.compare(df, {"population": pa, "aggregate": aa}, {"population": pb, "aggregate": ab})
        readings = [(r.hl, r.hl_low, r.hl_high) for r in d.itertuples()] + [(r.mean_diff, r.ci_low, r.ci_high) for r in d.itertuples()]
        out.append((pa, pb, readings))
    return out


def _compared_pairs(pair_readings, claim):
    """The (population, population) pairs whose paired difference gives the claim's value and interval."""
    return [(pa, pb) for pa, pb, readings in pair_readings
            if any(np.allclose([v, lo, hi], [claim.value, claim.ci_low, claim.ci_high], rtol=0, atol=1e-12)
                   for v, lo, hi in readings)]


def test_fidelity_and_control_claims_compare_populations_of_equal_size(S):
    """Every counted claim that sets decoys against blur / inpainting / noise / constant fills compares two
    populations with as many maps per image; with the paper's 2M + 1 decoys as the reference it fails."""
    checked = 0
    for claims, df in ((F.claims(S), F.fidelity_scores(S)), (C.claims(S), C.control_scores(S))):
        sizes = _sizes(S, df)
        pair_readings = _pair_readings(df)
        for claim in claims:
            if claim.paper_claim not in ("replacement", "control") or not claim.counts:
                continue
            pairs = _compared_pairs(pair_readings, claim)
            assert pairs, f"no pair of populations gives the claim {claim.claim!r}"
            for a, b in pairs:
                assert sizes[a] == sizes[b], f"{claim.claim!r} compares {a} ({sizes[a]} maps) with {b} ({sizes[b]} maps)"
            checked += 1
    assert checked >= 3 * len(F.REPLACEMENTS) + 3


def test_tables_carry_the_population_size(S):
    df = F.fidelity_scores(S)
    sizes = Sc.population_sizes(df)
    m = len(Sc.population(S, S.main_model, S.layer(S.main_model), "blur", 1)[0])
    assert sizes["none"] == "1"
    assert sizes["decoys_m"] == sizes["blur"] == sizes["inpaint"] == str(m + 1)
    assert sizes["decoys"] == str(2 * m + 1)
    vs = C.versus_reference(C.control_scores(S, methods=["gradient"]).query("population != 'none'"))
    assert (vs["reference maps"] == str(m + 1)).all()
    assert (vs["equal size"] == (vs["maps"] == vs["reference maps"])).all()
    assert set(vs[~vs["equal size"]].population) == set(C.CONTEXT_KINDS)


def test_control_claim_is_one_measure_per_alternative(S):
    rows = C.claims(S)
    counted = [c for c in rows if c.counts]
    alternatives = (len(C.CONTROL_KINDS) - len(C.CONTEXT_KINDS)) * len(Sc.AGGREGATES) - 1
    assert len(counted) == alternatives * len(E.METHODS)
    assert len(rows) - len(counted) == len(E.METHODS)  # the paper's 2M + 1 decoys, context
    assert all(c.test == "direction" and c.ci_low <= c.value <= c.ci_high for c in rows)


def test_the_control_claim_counts_its_powered_run(S, monkeypatch):
    """With a powered run (3 images, the settings' 2 its pilot) the counted control rows are the powered run's, one
    per method and alternative of equal size; the main run's rows and the paper's 2M + 1 decoys are context."""
    monkeypatch.setattr(F, "POWERED_SCALES", ("ci",))
    monkeypatch.setitem(F.POWERED_COST_PER_IMAGE_S, "control", 1.0)
    monkeypatch.setitem(F.POWERED_BUDGET_S, "control", 3.0)
    assert F.powered_size(S, "control")["n"] == 3
    rows = C.claims(S)
    counted = [c for c in rows if c.counts]
    alternatives = (len(C.CONTROL_KINDS) - len(C.CONTEXT_KINDS)) * len(Sc.AGGREGATES) - 1
    assert F.powered_measures(S, "control") == alternatives * len(E.METHODS) == len(counted)
    assert all(c.n == 3 and "powered run" in c.measure for c in counted)
    pilot = [c for c in rows if not c.counts and "pilot" in c.claim]
    assert len(pilot) == len(counted) and all(c.n == 2 for c in pilot)
    assert len(rows) == 2 * len(counted) + len(E.METHODS)  # and the paper's 2M + 1 decoys per method, context
