"""The line-search solver (``solver="linesearch"``) and the mask analysis it rests on.

The contract's guarantees (outside-mask pixels, [0, 1], deviation <= epsilon recomputed one decoy
at a time, dropped decoys reported) are checked for both solvers in test_decoys.py; here: the
hand-computable optimum of a linear layer, the footprint labels the solver relies on, that it
never builds a graph, batching invariance, and the structure of the default masks.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import Saliency
from torch import nn

import dance
from dance.layers import LayerProbe
from dance.decoys import _FEASIBILITY_MARGIN
from dance.masks import group_footprints, lattice_masks, mask_groups, patch_starts

from helpers import IMAGE_SIZE, deviations_one_at_a_time, identity_conv


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kw)


def _identity_net(channels: int = 3, size: int = 8) -> nn.Module:
    return nn.Sequential(identity_conv(channels), nn.Flatten(), nn.Linear(channels * size * size, 2)).eval()


# --------------------------------------------------------------------------------------------
# Closed form: F_l(x) = x + b, so a patch's deviation at step a is max_i min(a, room_i)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rtol", [0.01, 0.05, 0.2])
def test_identity_layer_steps_land_in_the_tolerance_band(make_image, rtol):
    """Each patch's optimum is the step a* = epsilon (when some pixel has that much room), so the
    movement of a decoy is sum_i min(a, room_i) with a in [(1 - rtol) eps, eps]: bounded by hand."""
    eps = 0.05
    net = _identity_net()
    x = make_image(8, seed=3)
    d = dance.generate_decoys(net, x, "0", epsilon=eps, solver=dance.LineSearch(rtol=rtol))
    assert d.dropped == 0 and len(d) > 0
    delta = (d.images - d.original) * d.signs.view(-1, 1, 1, 1)
    room = torch.where(d.signs.view(-1, 1, 1, 1) > 0, 1 - d.original, d.original) * d.masks
    assert bool((delta >= 0).all())                       # moves only in direction s
    assert bool((delta <= room + 1e-7).all())              # never past the pixel range
    upper = torch.minimum(room, torch.full_like(room, eps)).flatten(1).sum(1)
    lower = torch.minimum(room, torch.full_like(room, eps * (1 - rtol) * (1 - _FEASIBILITY_MARGIN))).flatten(1).sum(1)
    assert bool((d.movement <= upper + 1e-5).all())
    assert bool((d.movement >= lower - 1e-5).all())
    # The deviation is the largest pixel change (identity layer), measured on the returned image.
    assert torch.allclose(d.deviation, delta.abs().flatten(1).amax(dim=1), atol=1e-6)


def test_identity_layer_uniform_step_per_patch(make_image):
    """Within one patch every pixel with room moves by the same step (clipped at the range)."""
    net = _identity_net()
    x = make_image(8, seed=5)
    d = dance.generate_decoys(net, x, "0", epsilon=0.05, solver="linesearch")
    pieces, counts = mask_groups(d.masks)
    s = d.signs.view(-1, 1, 1, 1).to(x.dtype)
    delta = (d.images - d.original) * s                                    # [N, 3, H, W]
    room = torch.where(s > 0, 1 - d.original, d.original)                   # [N, 3, H, W]
    for n in range(len(d)):
        for g in range(int(counts[n])):
            inside = (pieces[n] == g).expand(3, -1, -1)
            step = delta[n][inside].max()
            free = inside & (room[n] > step + 1e-6)
            clipped = inside & ~free
            assert torch.allclose(delta[n][free], step.expand(int(free.sum())), atol=1e-6)
            assert torch.allclose(delta[n][clipped], room[n][clipped], atol=1e-6)


# --------------------------------------------------------------------------------------------
# The analysis: pieces of a mask and the layer cells each one reaches
# --------------------------------------------------------------------------------------------

def test_mask_groups_are_the_connected_patches():
    masks = lattice_masks(12, 12, 2, 2, (3, 3))          # 9 masks, patches 6 px apart
    pieces, counts = mask_groups(masks)
    assert counts.tolist() == [4] * 9
    assert torch.equal(pieces >= 0, masks[:, 0])
    for m in range(9):
        for g in range(4):
            cells = (pieces[m] == g).nonzero()
            # one 2x2 patch per piece
            assert cells.shape[0] == 4 and int(cells[:, 0].max() - cells[:, 0].min()) == 1


def test_footprint_labels_match_the_dilation_of_a_3x3_conv(make_image):
    """At the output of one 3x3 conv (padding 1), a patch reaches exactly its 1-pixel dilation."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 12 * 12, 2)).eval()
    x = make_image(12).unsqueeze(0)
    masks = lattice_masks(12, 12, 2, 2, (2, 2))          # patches 4 px apart: dilations disjoint
    pieces, counts = mask_groups(masks)
    pieces2, counts2, cells = group_footprints(LayerProbe(net, net[0], "0"), x, pieces, counts)
    assert torch.equal(counts2, counts)                   # nothing merged
    dil = torch.nn.functional.max_pool2d(
        torch.nn.functional.one_hot(pieces.clamp_min(0), int(counts.max())).permute(0, 3, 1, 2).float()
        * (pieces >= 0).unsqueeze(1), 3, stride=1, padding=1)       # [M, G, H, W]
    expected = torch.where(dil.amax(1) > 0, dil.argmax(1), torch.full_like(pieces, -1))
    assert torch.equal(cells.view(-1, 12, 12).long(), expected)


def test_pieces_whose_footprints_touch_are_merged(make_image):
    """Two patches 1 px apart interact through a 3x3 conv: they must share one step."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()
    x = make_image(8).unsqueeze(0)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 0:2, 0:2] = True
    mask[0, 0, 0:2, 3:5] = True                           # 1-px gap: dilations overlap
    mask[0, 0, 6:8, 6:8] = True                           # far away: stays its own group
    pieces, counts = mask_groups(mask)
    assert counts.tolist() == [3]
    pieces2, counts2, cells = group_footprints(LayerProbe(net, net[0], "0"), x, pieces, counts)
    assert counts2.tolist() == [2]
    merged = pieces2[0][0, 0], pieces2[0][0, 3]
    assert merged[0] == merged[1] != pieces2[0][7, 7]


def test_single_piece_masks_need_no_measurement(make_image):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).eval()
    masks = lattice_masks(8, 8, 4, 4)                     # spacing None: one patch per mask
    pieces, counts = mask_groups(masks)
    _, _, cells = group_footprints(LayerProbe(net, net[0], "0"), make_image(8).unsqueeze(0), pieces, counts)
    assert cells.shape == (4, 0)


@pytest.mark.parametrize("size,patch,stride", [(16, 3, 3), (64, 3, 3), (17, 3, 2), (10, 3, 1)])
def test_lattice_masks_cover_the_image_and_edge_patches_join_their_neighbour(size, patch, stride):
    masks = lattice_masks(size, size, patch, stride, (4, 4))
    assert bool(masks.any(dim=0).all())
    starts = patch_starts(size, patch, stride)
    k = min(4, len(starts))
    assert masks.shape[0] == k * k
    if stride == patch:
        # The grid tiles the image except for the moved-inward edge patch, which now shares the
        # mask of the patch it overlaps: masks partition the image.
        assert bool((masks.sum(dim=0) == 1).all())


# --------------------------------------------------------------------------------------------
# The solver's own properties
# --------------------------------------------------------------------------------------------

def test_linesearch_never_builds_an_autograd_graph(make_model, make_image):
    model = make_model("vgg")
    seen = []
    handle = model[3].register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad or torch.is_grad_enabled()))
    try:
        _quiet(dance.generate_decoys, model, make_image(12), "3", epsilon=0.1, relative=True, solver="linesearch")
    finally:
        handle.remove()
    assert seen and not any(seen)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind,layer", [("vgg", "3"), ("bn", "5"), ("resnet", "layer1.0.conv1")])
def test_batched_equals_one_at_a_time(kind, layer, make_model, make_image):
    """``batch_size=1`` optimises the same decoys one by one: same result up to float order."""
    model = make_model(kind)
    x = make_image(IMAGE_SIZE[kind])
    kw = dict(epsilon=0.1, relative=True, solver="linesearch", n_masks=4)
    a = _quiet(dance.generate_decoys, model, x, layer, **kw)
    b = _quiet(dance.generate_decoys, model, x, layer, batch_size=1, **kw)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.signs, b.signs)
    assert (a.images - b.images).abs().max() <= 1e-4
    dev = deviations_one_at_a_time(model, layer, x, b.images)
    assert bool((dev <= b.epsilon).all())


def test_seeded_runs_are_identical(make_model, make_image):
    model = make_model("bn")
    x = make_image(12)
    kw = dict(epsilon=0.1, relative=True, solver="linesearch")
    a = _quiet(dance.generate_decoys, model, x, "5", **kw)
    b = _quiet(dance.generate_decoys, model, x, "5", **kw)
    for field in ("images", "masks", "signs", "deviation", "movement"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_multi_image_batch_through_decoy_enhanced(make_model, make_image):
    """Several images optimised together keep every image's decoys within its own epsilon."""
    from captum.attr import Saliency
    model = make_model("vgg")
    xs = make_image(12, batch=3)
    explainer = dance.DecoyEnhanced(Saliency(model), layer="3", epsilon=0.1, relative=True, solver="linesearch")
    maps, decoys = _quiet(explainer.attribute, xs, target=1, return_decoys=True)
    assert maps.shape == xs.shape
    for b, d in enumerate(decoys):
        dev = deviations_one_at_a_time(model, "3", xs[b], d.images)
        assert bool((dev <= d.epsilon).all())
        assert torch.allclose(d.deviation, dev, rtol=1e-4, atol=1e-6)


def test_few_forward_passes(make_model, make_image, call_counter):
    """Forward-only and capped: a probe pass plus at most 4 search passes and one check."""
    model = make_model("vgg")
    x = make_image(12)
    _quiet(dance.generate_decoys, model, x, "3", epsilon=0.1, relative=True, solver="linesearch")  # warm the cache
    with call_counter([("0", model[0])]) as counter:
        d = _quiet(dance.generate_decoys, model, x, "3", epsilon=0.1, relative=True, solver="linesearch")
    # reference, probe, <= 4 evaluations, <= 1 recomputation
    assert counter.calls["0"] <= 7
    assert d.steps_run <= 5 and d.extra["solver"] == "linesearch"


@pytest.mark.parametrize("bad,err", [({"solver": "sgd"}, ValueError), ({"solver": 3}, TypeError),
                                     ({"rtol": 0.0}, ValueError), ({"rtol": 1.0}, ValueError),
                                     ({"rtol": "a"}, TypeError)])
def test_bad_solver_options(bad, err, make_model, make_image):
    with pytest.raises(err, match="solver|rtol"):
        solver = dance.LineSearch(rtol=bad["rtol"]) if "rtol" in bad else bad["solver"]
        dance.generate_decoys(make_model("vgg"), make_image(12), "3", epsilon=0.1, solver=solver)


def test_flat_solver_settings_are_refused_with_a_pointer_to_the_solver_object(make_model, make_image):
    # Solver settings live in their solver object, never as loose keywords.
    with pytest.raises(TypeError, match="rtol"):
        dance.generate_decoys(make_model("vgg"), make_image(12), "3", epsilon=0.1, rtol=0.1)
    with pytest.raises(TypeError, match="dance.Adam"):
        dance.DecoyEnhanced(Saliency(make_model("vgg")), layer="3", epsilon=0.1, steps=5)


def test_linesearch_evaluates_only_up_to_the_layer(make_model, make_image, call_counter):
    model = make_model("vgg")
    after = [(str(i), model[i]) for i in range(4, len(model))]
    with call_counter(after) as counter:
        _quiet(dance.generate_decoys, model, make_image(12), "3", epsilon=0.1, relative=True, solver="linesearch")
    assert all(n == 0 for n in counter.calls.values()), counter.calls
