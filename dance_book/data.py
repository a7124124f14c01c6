"""Ground-truthed benchmark data for CI scale: generated Shapes and scikit-learn's Digits.

Saliency methods are judged by where their maps put the mass. That needs to know where
the evidence *is*: in :func:`shapes` the label is decided by the outline of exactly one
object, and every image comes with that object's pixel mask and bounding box. Everything
else in the picture (textured background, lines, blobs) is drawn from one distribution for
all classes, so it never decides the label. :func:`digits` adds real handwriting (the 8x8
digits that ship inside scikit-learn), so conclusions are not about synthetic images alone.

Both return an :class:`ImageSet`, which is also a ``torch.utils.data.Dataset`` of
``(image, label)`` pairs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import math

import numpy as np
import torch
import torch.nn.functional as F

#: The Shapes classes, in label order. Each is defined only by the object's outline.
SHAPE_CLASSES: Tuple[str, ...] = ("circle", "square", "triangle", "cross", "star", "ring")
#: The Digits classes, in label order.
DIGIT_CLASSES: Tuple[str, ...] = tuple(str(d) for d in range(10))

#: Seeds of the standard Shapes splits. Training runs draw fresh images from seeds
#: ``SHAPES_TRAIN_SEED + epoch``; the held-out set uses ``SHAPES_TEST_SEED``, whose stream
#: no training epoch ever touches.
SHAPES_TEST_SEED = 1
SHAPES_TRAIN_SEED = 1000

_SIZE = 64  # Shapes images are 64 x 64
_CHUNK = 256  # images are generated in chunks of this many, each chunk with its own seed


@dataclass
class ImageSet(torch.utils.data.Dataset):
    """Images with labels and, where known, the ground truth of where the object is.

    Attributes:
        images: float tensor ``[N, C, H, W]`` in [0, 1].
        labels: long tensor ``[N]`` (``-1`` where the label is unknown).
        classes: class names, indexed by label.
        masks: bool tensor ``[N, 1, H, W]``, True on the pixels of the object that decides
            the label (``None`` if unknown).
        boxes: the object's bounding box ``(x_min, y_min, x_max, y_max)`` in pixels, with
            the max exclusive (torchvision's convention): a float tensor ``[N, 4]`` when every
            image has one object, or a list of ``N`` tensors ``[K_i, 4]`` when images may hold
            several annotated objects (ImageNet). ``None`` if unknown.
        names: optional identifiers of the images (file names for image folders).

    Indexing (``dataset[i]``) gives ``(images[i], labels[i])``, so an ``ImageSet`` can go
    straight into a ``DataLoader``; :meth:`subset` keeps the ground truth alongside.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: Tuple[str, ...]
    masks: Optional[torch.Tensor] = None
    boxes: Optional[Union[torch.Tensor, List[torch.Tensor]]] = None
    names: Optional[List[str]] = field(default=None)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def subset(self, index: Union[Sequence[int], slice, torch.Tensor]) -> "ImageSet":
        """The images at ``index`` (a slice, a list of ints or a tensor), ground truth included."""
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(index, dtype=torch.long).flatten()
        boxes = self.boxes
        if isinstance(boxes, list):
            boxes = [boxes[i] for i in idx.tolist()]
        elif boxes is not None:
            boxes = boxes[idx]
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=self.classes,
            masks=None if self.masks is None else self.masks[idx],
            boxes=boxes,
            names=None if self.names is None else [self.names[i] for i in idx.tolist()],
        )


def _check_count(n, name="n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be at least 1, got {n}")
    return int(n)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    return int(seed)


def _chunk_generator(seed: int, chunk: int) -> torch.Generator:
    # One independent stream per (seed, chunk): the first n images of a seed are the same
    # whatever n is, and chunking never changes an image.
    state = np.random.SeedSequence([seed, chunk]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


def _shape_membership(labels: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Which pixels lie inside each object; ``u, v`` are [B, H, W] coordinates in the object's
    own frame (rotated, and scaled so that every shape fits the unit disc)."""
    inside = torch.zeros_like(u, dtype=torch.bool)
    for label in range(len(SHAPE_CLASSES)):
        sel = labels == label
        if not bool(sel.any()):
            continue
        a, b = u[sel], v[sel]
        name = SHAPE_CLASSES[label]
        if name == "circle":
            m = a * a + b * b <= 0.9**2
        elif name == "square":  # corners at radius 0.96
            m = torch.maximum(a.abs(), b.abs()) <= 0.68
        elif name == "triangle":  # equilateral, circumradius 1: three half-planes 0.5 from the centre
            m = torch.ones_like(a, dtype=torch.bool)
            for k in range(3):
                ang = -math.pi / 2 + 2 * math.pi * k / 3
                m &= (a * math.cos(ang) + b * math.sin(ang)) <= 0.5
        elif name == "cross":  # a plus sign
            aa, ab = a.abs(), b.abs()
            m = ((aa <= 0.27) & (ab <= 0.95)) | ((ab <= 0.27) & (aa <= 0.95))
        elif name == "star":
            # five points, outer radius 1, inner radius 0.42: fold the angle into one
            # half-spike and test against the edge from the tip (1, 0) to the notch
            r = torch.sqrt(a * a + b * b)
            phi = torch.atan2(b, a) % (2 * math.pi / 5)
            phi = torch.minimum(phi, 2 * math.pi / 5 - phi)
            x, y = r * torch.cos(phi), r * torch.sin(phi)
            nx, ny = 0.42 * math.cos(math.pi / 5), 0.42 * math.sin(math.pi / 5)
            m = (nx - 1) * y - ny * (x - 1) >= 0  # on the centre's side of the edge
        else:  # ring
            r2 = a * a + b * b
            m = (r2 <= 0.95**2) & (r2 >= 0.55**2)
        inside[sel] = m
    return inside


_INTERP_CACHE: dict = {}


def _upsample_matrix(low: int, high: int) -> torch.Tensor:
    # Bicubic upsampling is separable: smooth = A^T noise A with A [low, high]. Two small
    # matmuls instead of a full 2-D interpolation.
    key = (low, high)
    if key not in _INTERP_CACHE:
        eye = torch.eye(low).view(low, 1, low, 1)
        _INTERP_CACHE[key] = F.interpolate(eye, size=(high, 1), mode="bicubic", align_corners=False)[:, 0, :, 0]
    return _INTERP_CACHE[key]


def _box_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` bool -> ``[B, 4]`` float ``(x_min, y_min, x_max, y_max)``, max exclusive."""
    h, w = mask.shape[-2:]
    cols = mask.any(dim=2).squeeze(1)  # [B, W]
    rows = mask.any(dim=3).squeeze(1)  # [B, H]
    ax, ay = torch.arange(w), torch.arange(h)
    return torch.stack(
        [
            torch.where(cols, ax, w).min(1).values,
            torch.where(rows, ay, h).min(1).values,
            torch.where(cols, ax, -1).max(1).values + 1,
            torch.where(rows, ay, -1).max(1).values + 1,
        ],
        1,
    ).float()


def _shapes_chunk(gen: torch.Generator, count: int, distractors: bool, objects: bool = True):
    s = _SIZE
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    labels = torch.randint(len(SHAPE_CLASSES), (count,), generator=gen)
    coord = torch.arange(s, dtype=torch.float32) + 0.5  # pixel centres

    # Background: a random base colour, smooth low-frequency colour noise, a faint grating
    # and pixel noise, so that no flat colour gives the object away.
    light = rand(count, 1, 1, 1) < 0.5  # is the object lighter than the background?
    bg_level = torch.where(light, 0.2 + 0.25 * rand(count, 1, 1, 1), 0.55 + 0.25 * rand(count, 1, 1, 1))
    up = _upsample_matrix(6, s)
    smooth = up.T @ (rand(count, 3, 6, 6) - 0.5) @ up  # [B, 3, H, W]
    freq = 0.08 + 0.25 * rand(count, 1, 1, 1)
    angle = math.pi * rand(count, 1, 1, 1)
    phase = 2 * math.pi * rand(count, 1, 1, 1)
    # sin(a x + b y + c) = sin(a x + c) cos(b y) + cos(a x + c) sin(b y): separable, cheap
    ax_ = 2 * math.pi * freq * torch.cos(angle) * coord.view(1, 1, 1, s) + phase
    by_ = 2 * math.pi * freq * torch.sin(angle) * coord.view(1, 1, s, 1)
    grating = torch.sin(ax_) * torch.cos(by_) + torch.cos(ax_) * torch.sin(by_)
    image = (bg_level + 0.12 * (rand(count, 3, 1, 1) - 0.5)) + 0.25 * smooth + (0.08 * rand(count, 1, 1, 1)) * grating

    # Distractors: line segments and soft blobs in random colours, drawn from one
    # distribution for every class, under the object.
    n_lines, n_blobs, n_pts = 4, 3, 96
    p0 = rand(count, n_lines, 1, 2) * s
    p1 = rand(count, n_lines, 1, 2) * s
    on_line = rand(count, n_lines) < (0.75 if distractors else 0.0)
    thick = rand(count, n_lines) < 0.5
    line_colour = rand(count, n_lines, 3)
    # rasterise each segment by dense sampling along it; thick ones get a second, shifted copy
    t = torch.linspace(0, 1, n_pts).view(1, 1, n_pts, 1)
    pts = p0 + t * (p1 - p0)  # [B, L, P, 2] as (x, y)
    shift = thick.view(count, n_lines, 1, 1) * torch.tensor([[[[0.7, 0.7]]]])
    pts = torch.cat([pts, pts + shift], dim=2).long().clamp(0, s - 1)
    lines = torch.zeros(count * n_lines, s * s)
    lines.scatter_(1, (pts[..., 1] * s + pts[..., 0]).view(count * n_lines, -1), 1.0)
    lines = lines.view(count, n_lines, s, s)
    lines = lines * on_line.view(count, n_lines, 1, 1)
    centre = rand(count, n_blobs, 2) * s
    sigma = 2.0 + 3.0 * rand(count, n_blobs, 1)
    on_blob = rand(count, n_blobs, 1) < (0.7 if distractors else 0.0)
    # a Gaussian blob is separable too: exp(-dx^2/2s^2) exp(-dy^2/2s^2)
    gx = torch.exp(-((coord - centre[..., 0:1]) ** 2) / (2 * sigma**2)) * (0.85 * on_blob)
    gy = torch.exp(-((coord - centre[..., 1:2]) ** 2) / (2 * sigma**2))
    blobs = gy.unsqueeze(-1) * gx.unsqueeze(-2)  # [B, K, H, W]
    blob_colour = rand(count, n_blobs, 3)
    for alpha, colour in ((lines, line_colour), (blobs, blob_colour)):
        for k in range(alpha.shape[1]):  # a handful of layers, each over the whole batch
            a = alpha[:, k : k + 1]
            image = image + a * (colour[:, k, :, None, None] - image)

    # The object: one shape with random size, position, rotation and colour. Its colour is
    # kept clearly darker or lighter than the background; otherwise colour is free.
    radius = (10.0 + 10.0 * rand(count)).view(-1, 1, 1)
    cx = radius + 1 + (s - 2 * radius - 2) * rand(count, 1, 1)
    cy = radius + 1 + (s - 2 * radius - 2) * rand(count, 1, 1)
    theta = 2 * math.pi * rand(count, 1, 1)
    obj_level = torch.where(light, bg_level + 0.3 + 0.2 * rand(count, 1, 1, 1), bg_level - 0.3 - 0.2 * rand(count, 1, 1, 1))
    obj_colour = (obj_level + 0.3 * (rand(count, 3, 1, 1) - 0.5)).clamp(0, 1)
    dx = coord.view(1, 1, s) - cx
    dy = coord.view(1, s, 1) - cy
    c, sn = torch.cos(theta), torch.sin(theta)
    u = (c * dx + sn * dy) / radius
    v = (-sn * dx + c * dy) / radius
    mask = _shape_membership(labels, u, v).unsqueeze(1)  # [B, 1, H, W]
    # some shading on the object too, so its pixels are not one flat colour
    if objects:
        image = torch.where(mask, obj_colour + 0.05 * smooth.flip(1), image)
    image = (image + 0.03 * torch.randn(count, 3, s, s, generator=gen)).clamp_(0, 1)
    return image, labels, mask, _box_from_mask(mask)


def shapes(n: int = 1000, *, seed: int = SHAPES_TEST_SEED, distractors: bool = True, objects: bool = True) -> ImageSet:
    """Generate ``n`` Shapes images: one object per image whose outline decides the label.

    Six classes (:data:`SHAPE_CLASSES`: circle, square, triangle, cross, star, ring), each
    object with random position, size (radius 10-20 px), rotation and colour, on a textured,
    noisy background with class-irrelevant distractors (line segments, soft blobs). The
    object is drawn on top, so its mask is exactly the pixels that carry the label.

    Generation is vectorised over the images (about 10,000 per few seconds on one core)
    and deterministic: a given ``seed`` always gives the same images, and the first ``k``
    images of ``shapes(n, seed=s)`` do not depend on ``n``.

    Args:
        n: number of images.
        seed: which stream of images; :data:`SHAPES_TEST_SEED` is the standard held-out set.
            Training uses seeds :data:`SHAPES_TRAIN_SEED` (1000) and above only, so images
            from any seed below 1000 were never seen by a zoo model.
        distractors: draw the lines and blobs (set False for illustrations).
        objects: draw the objects. With False, the images are background and distractors
            only (the very pixels that ``objects=True`` gives off the object), while labels,
            masks and boxes still say where the object would have been: a control for
            "does anything but the object carry the label?".

    Returns:
        :class:`ImageSet` with ``images [n, 3, 64, 64]`` float in [0, 1], ``labels [n]``,
        ``masks [n, 1, 64, 64]`` bool, ``boxes [n, 4]`` float ``(x_min, y_min, x_max, y_max)``
        (max exclusive) and ``classes`` = :data:`SHAPE_CLASSES`.

    Example:
        >>> import dance_book.data
        >>> data = dance_book.data.shapes(8, seed=0)
        >>> data.images.shape, data.masks.shape, data.boxes.shape
        (torch.Size([8, 3, 64, 64]), torch.Size([8, 1, 64, 64]), torch.Size([8, 4]))
    """
    n = _check_count(n)
    seed = _check_seed(seed)
    parts = []
    for chunk in range((n + _CHUNK - 1) // _CHUNK):
        parts.append(_shapes_chunk(_chunk_generator(seed, chunk), _CHUNK, bool(distractors), bool(objects)))
    images, labels, masks, boxes = (torch.cat(p)[:n] for p in zip(*parts))
    return ImageSet(images=images.contiguous(), labels=labels, classes=SHAPE_CLASSES, masks=masks.contiguous(), boxes=boxes)


#: Side of the upsampled Digits images.
DIGITS_SIZE = 32
#: Fraction of each class held out as the Digits test split.
DIGITS_TEST_FRACTION = 0.25
_DIGITS_SPLIT_SEED = 0


def digits(split: str = "test", *, size: int = DIGITS_SIZE) -> ImageSet:
    """scikit-learn's handwritten digits (1,797 images, 8x8, shipped with scikit-learn),
    upsampled bilinearly to ``size x size``, one grey channel, in [0, 1].

    The train/test split is fixed: per class, a seeded permutation (NumPy PCG64, seed 0,
    stable across versions) puts :data:`DIGITS_TEST_FRACTION` of the images into ``"test"``.
    Digits are single-channel on purpose: replicating grey into RGB would let decoys change
    the three copies independently, which no real digit does.

    The mask is the ink (upsampled intensity above 0.25) and the box bounds it: a rough
    ground truth, useful for sanity checks, not a hand annotation.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: side of the output images (8 keeps the originals).

    Returns:
        :class:`ImageSet` with ``images [N, 1, size, size]``, ``labels [N]``, ``masks``,
        ``boxes [N, 4]`` and ``classes`` = :data:`DIGIT_CLASSES` (``N`` = 1,347 train,
        450 test).

    Example:
        >>> import dance_book.data
        >>> test = dance_book.data.digits("test")
        >>> test.images.shape
        torch.Size([450, 1, 32, 32])
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8 (the originals are 8x8), got {size!r}")
    from sklearn.datasets import load_digits  # shipped with scikit-learn: no download

    raw = load_digits()
    images = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(raw.target, dtype=torch.long)
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(raw.target == c)
        is_test[rng.permutation(idx)[: int(round(DIGITS_TEST_FRACTION * len(idx)))]] = True
    keep = {"train": ~is_test, "test": is_test, "all": np.ones_like(is_test)}[split]
    keep_t = torch.as_tensor(np.flatnonzero(keep))
    images, labels = images[keep_t], labels[keep_t]
    if size != 8:
        images = F.interpolate(images, size=(int(size), int(size)), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).contiguous()
    masks = images > 0.25
    boxes = _box_from_mask(masks)
    names = [f"digits-{i}" for i in keep_t.tolist()]
    return ImageSet(images=images, labels=labels, classes=DIGIT_CLASSES, masks=masks, boxes=boxes, names=names)
