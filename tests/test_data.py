"""Shapes and Digits: determinism, speed, geometry, and ground truth that matches the object."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dance_book import data


@pytest.fixture(scope="module")
def sample():
    return data.shapes(600, seed=7)


def test_shapes_format(sample):
    assert sample.images.shape == (600, 3, 64, 64) and sample.images.dtype == torch.float32
    assert float(sample.images.min()) >= 0.0 and float(sample.images.max()) <= 1.0
    assert sample.masks.shape == (600, 1, 64, 64) and sample.masks.dtype == torch.bool
    assert sample.boxes.shape == (600, 4)
    assert len(data.SHAPE_CLASSES) >= 6 and sample.classes == data.SHAPE_CLASSES
    # every class occurs, in roughly equal numbers
    counts = torch.bincount(sample.labels, minlength=len(data.SHAPE_CLASSES))
    assert counts.min() > 600 / len(data.SHAPE_CLASSES) / 2


def test_shapes_deterministic_and_prefix_stable():
    a = data.shapes(300, seed=3)
    b = data.shapes(300, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
    # the first k images of a seed do not depend on how many are drawn
    c = data.shapes(40, seed=3)
    assert torch.equal(c.images, a.images[:40]) and torch.equal(c.masks, a.masks[:40])
    d = data.shapes(40, seed=4)
    assert not torch.equal(c.images, d.images)


def test_a_large_batch_is_generated_whole():
    # Its speed is measured in benchmarks/ (shapes_generation), not asserted here: a timing
    # limit in a unit test fails on a busy machine.
    big = data.shapes(2_000, seed=5)
    assert len(big) == 2_000 and big.images.shape == (2_000, 3, 64, 64)
    assert torch.equal(big.images[:40], data.shapes(40, seed=5).images)


def test_boxes_are_the_tight_bounds_of_the_masks(sample):
    for mask, box in zip(sample.masks[:, 0].numpy(), sample.boxes.numpy()):
        ys, xs = np.nonzero(mask)
        assert len(ys) > 0
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_masks_sit_on_the_object(sample):
    # The object is drawn clearly darker or lighter than the background around it: the
    # mean over the mask differs from the mean over a 2-pixel band just outside it.
    m = sample.masks.float()
    band = (F.max_pool2d(m, 5, 1, 2) - m).clamp(0, 1)
    lum = sample.images.mean(1, keepdim=True)
    inside = (lum * m).sum((1, 2, 3)) / m.sum((1, 2, 3))
    outside = (lum * band).sum((1, 2, 3)) / band.sum((1, 2, 3))
    assert bool(((inside - outside).abs() > 0.12).all())
    # objects lie fully inside the image (radius 10-20 px, kept 1 px from the border)
    assert bool((sample.boxes[:, :2] >= 0).all() and (sample.boxes[:, 2:] <= 64).all())
    assert sample.masks.sum((1, 2, 3)).min() > 40


def test_distractors_never_touch_the_label_or_the_object():
    # Same seed with and without distractors: identical objects, labels and masks;
    # only pixels off the object differ.
    with_d = data.shapes(200, seed=11)
    without = data.shapes(200, seed=11, distractors=False)
    assert torch.equal(with_d.labels, without.labels) and torch.equal(with_d.masks, without.masks)
    off_object = ~with_d.masks.expand_as(with_d.images)
    assert (with_d.images != without.images)[off_object].float().mean() > 0.01


def test_objects_off_leaves_exactly_the_background():
    # The control image: same seed without the objects differs only on the object's mask.
    full = data.shapes(100, seed=12)
    empty = data.shapes(100, seed=12, objects=False)
    inside = full.masks.expand_as(full.images)
    assert torch.equal(full.images[~inside], empty.images[~inside])
    assert (full.images != empty.images)[inside].float().mean() > 0.9
    assert torch.equal(full.labels, empty.labels) and torch.equal(full.boxes, empty.boxes)


@pytest.mark.parametrize(
    "label, area",
    [
        (0, math.pi * 0.9**2),  # circle, radius 0.9
        (1, 1.36**2),  # square, half-side 0.68
        (2, 3 * math.sqrt(3) / 4),  # equilateral triangle, circumradius 1
        (3, 2 * 0.54 * 1.9 - 0.54**2),  # plus: two 0.54 x 1.9 bars minus their overlap
        (4, 10 * 0.5 * 0.42 * math.sin(math.pi / 5)),  # star: 10 triangles (tip, notch, centre)
        (5, math.pi * (0.95**2 - 0.55**2)),  # ring
    ],
)
def test_shape_geometry(label, area):
    # Rasterise each shape in its own frame on a fine grid over [-1.1, 1.1]^2: the area
    # must match the closed form, and rotating by the angle leaves the area unchanged.
    n = 1100
    g = (torch.arange(n) + 0.5) / n * 2.2 - 1.1
    v, u = torch.meshgrid(g, g, indexing="ij")
    for angle in (0.0, 0.7):
        c, s = math.cos(angle), math.sin(angle)
        uu, vv = c * u + s * v, -s * u + c * v
        inside = data._shape_membership(torch.tensor([label]), uu[None], vv[None])
        measured = float(inside.float().mean()) * 2.2**2
        assert measured == pytest.approx(area, rel=0.01)
    # every shape fits the unit disc (the generator keeps it inside the image)
    assert not bool((inside[0] & (u**2 + v**2 > 1.0)).any())


def test_shapes_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        data.shapes(0)
    with pytest.raises(TypeError, match="n must be an int"):
        data.shapes(2.5)
    with pytest.raises(ValueError, match="seed"):
        data.shapes(3, seed=-1)


def test_imageset_protocol(sample):
    loader = torch.utils.data.DataLoader(sample, batch_size=32)
    x, y = next(iter(loader))
    assert x.shape == (32, 3, 64, 64) and torch.equal(y, sample.labels[:32])
    sub = sample.subset([5, 2])
    assert torch.equal(sub.images[1], sample.images[2]) and torch.equal(sub.boxes[0], sample.boxes[5])
    assert torch.equal(sub.masks, sample.masks[[5, 2]])


def test_digits_split():
    train, test = data.digits("train"), data.digits("test")
    assert train.images.shape == (1347, 1, 32, 32) and test.images.shape == (450, 1, 32, 32)
    assert float(train.images.min()) >= 0 and float(train.images.max()) <= 1
    assert not set(train.names) & set(test.names)  # disjoint
    counts = torch.bincount(test.labels, minlength=10).float()
    totals = counts + torch.bincount(train.labels, minlength=10).float()
    assert bool(((counts / totals - data.DIGITS_TEST_FRACTION).abs() < 0.01).all())  # stratified
    again = data.digits("test")
    assert torch.equal(again.images, test.images) and again.names == test.names
    # the upsampling keeps the digit: pooled back to 8x8, every image correlates with its
    # original (bilinear smoothing keeps it from being exact; measured minimum 0.96)
    pooled = F.avg_pool2d(test.images, 4).flatten(1)
    originals = data.digits("test", size=8).images.flatten(1)
    pooled, originals = pooled - pooled.mean(1, keepdim=True), originals - originals.mean(1, keepdim=True)
    corr = (pooled * originals).sum(1) / (pooled.norm(dim=1) * originals.norm(dim=1))
    assert float(corr.min()) > 0.9
    with pytest.raises(ValueError, match="split"):
        data.digits("val")
