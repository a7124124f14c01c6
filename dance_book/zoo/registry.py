"""The zoo's registry: the fixed configuration of each model, and loading, checking and evaluating it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .. import data as _data
from ..imagenet import IMAGENET_MODELS
from .models import AlexNetStyle, ResNetStyle, VGGStyle
from .remedies import TRAININGS

#: Where the shipped weights and their records live.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


ZOO: Dict[str, dict] = {
    "vgg-shapes": dict(
        arch="vgg", dataset="shapes", blocks=[[8], [16], [32, 32], [64, 64]], hidden=128,
        epochs=15, n_train=5000, batch_size=64, lr=2e-3, weight_decay=1e-4, seed=0, shift=0,
    ),
    "alexnet-shapes": dict(
        arch="alexnet", dataset="shapes", widths=[16, 32, 48, 48, 32], hidden=128,
        epochs=25, n_train=5000, batch_size=64, lr=2e-3, weight_decay=1e-4, seed=0, shift=0,
    ),
    "resnet-shapes": dict(
        arch="resnet", dataset="shapes", widths=[16, 32, 64], blocks=[1, 1, 1],
        epochs=15, n_train=5000, batch_size=64, lr=3e-3, weight_decay=1e-4, seed=0, shift=0,
    ),
    "vgg-digits": dict(
        arch="vgg", dataset="digits", blocks=[[16], [32], [64, 64]], hidden=128,
        epochs=30, n_train=None, batch_size=64, lr=2e-3, weight_decay=1e-4, seed=0, shift=2,
    ),
}

#: Size of the held-out set each record's accuracy is measured on.
HELDOUT_N = {"shapes": 2000, "digits": None}  # None: the whole Digits test split (450)


def check_name(name) -> str:
    """``name`` if it names a zoo model, else a clear ``TypeError``/``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in ZOO:
        raise ValueError(f"unknown model name {name!r}; the zoo has {sorted(ZOO)} (ImageNet models: use dance_book.zoo.imagenet)")
    return name


def weights_stem(name: str, training: str = "regular") -> str:
    """The file stem of the weights and record of zoo model ``name`` trained with ``training``
    (:data:`dance_book.zoo.remedies.TRAININGS`): ``name`` for regular training, ``name-training`` otherwise
    (``vgg-shapes-scaat.pt`` and ``vgg-shapes-scaat.json``)."""
    check_name(name)
    if training not in TRAININGS:
        raise ValueError(f"training must be one of {TRAININGS}, got {training!r}")
    return name if training == "regular" else f"{name}-{training}"


def dataset_info(dataset: str) -> Tuple[Tuple[str, ...], int, int]:
    """``(class names, channels, image side)`` of the zoo data set ``"shapes"`` or ``"digits"``."""
    if dataset == "shapes":
        return _data.SHAPE_CLASSES, 3, 64
    return _data.DIGIT_CLASSES, 1, _data.DIGITS_SIZE


def build(name: str) -> nn.Module:
    """The untrained architecture of zoo model ``name`` (random weights, train mode)."""
    cfg = ZOO[check_name(name)]
    classes, channels, size = dataset_info(cfg["dataset"])
    if cfg["arch"] == "vgg":
        return VGGStyle(cfg["blocks"], in_channels=channels, image_size=size, num_classes=len(classes), hidden=cfg["hidden"])
    if cfg["arch"] == "alexnet":
        return AlexNetStyle(in_channels=channels, num_classes=len(classes), widths=cfg["widths"], hidden=cfg["hidden"])
    return ResNetStyle(in_channels=channels, num_classes=len(classes), widths=cfg["widths"], blocks=cfg["blocks"])


LAYER_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def layers(name_or_model: Union[str, nn.Module]) -> List[str]:
    """Names of the conv and pool layers of a model, in forward order: the layers at which
    the experiments generate decoys (pass one as ``layer=`` to :func:`dance.generate_decoys`).

    Args:
        name_or_model: a zoo name (``"vgg-shapes"``), an ImageNet name (``"vgg16"``; names
            carry the ``model.`` prefix of the :class:`dance.Normalized` wrapper that
            :func:`imagenet` returns) or any ``nn.Module``.

    Returns:
        list of module names, e.g. for ``"vgg-shapes"``: ``features.conv1_1, features.pool1,
        features.conv2_1, features.pool2, features.conv3_1, features.conv3_2,
        features.pool3, features.conv4_1, features.conv4_2, features.pool4``.

    Example:
        >>> import dance_book.zoo
        >>> dance_book.zoo.layers("resnet-shapes")[:3]
        ['conv1', 'layer1.0.conv1', 'layer1.0.conv2']
    """
    if isinstance(name_or_model, nn.Module):
        model = name_or_model
    elif isinstance(name_or_model, str) and name_or_model in IMAGENET_MODELS:
        import torchvision

        with torch.device("meta"):  # only the structure is needed: allocate nothing
            return ["model." + n for n in layers(torchvision.models.get_model(name_or_model, weights=None))]
    else:
        model = build(name_or_model)
    return [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (the weights' records store it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train_command(name: str, training: str = "regular", **overrides) -> str:
    """The command line that trains zoo model ``name`` with ``training``; ``overrides`` (``epochs=4``, ``n_train=...``,
    ``n_heldout=...``, ``seed=...``; None values are left out) become their command-line flags (``--epochs 4``)."""
    flags = "".join(f" --{key.replace('_', '-')} {value}" for key, value in overrides.items() if value is not None)
    return f"python -m dance_book.zoo train {name}" + flags + ("" if training == "regular" else f" --training {training}")


def record(name: str, *, weights_dir: Union[str, Path, None] = None, training: str = "regular") -> dict:
    """The JSON record shipped beside a model's weights (config, seed, accuracy, sha256); ``training`` picks
    the variant (``"regular"``, ``"adversarial"``, ``"scaat"``)."""
    path = Path(weights_dir or WEIGHTS_DIR) / f"{weights_stem(name, training)}.json"
    if not path.exists():
        raise FileNotFoundError(f"no record {path}; train the model with: {train_command(name, training)}")
    return json.loads(path.read_text())


def load(
    name: str,
    *,
    weights_dir: Union[str, Path, None] = None,
    device: Union[str, torch.device, None] = None,
    frozen: bool = True,
    training: str = "regular",
) -> nn.Module:
    """A trained zoo model in eval mode, from the weights shipped with the package.

    The weights file's sha256 is checked against its record first, so a model never
    silently differs from the one whose accuracy the record reports.

    Args:
        name: one of :data:`ZOO` (``"vgg-shapes"``, ``"alexnet-shapes"``, ``"resnet-shapes"``,
            ``"vgg-digits"``).
        weights_dir: where ``<name>.pt`` and ``<name>.json`` are (default: the shipped ones).
        device: where to put the model (default CPU).
        frozen: turn off gradients for the parameters (explanations only need input
            gradients; this halves the cost of a backward pass).
        training: which training's weights: ``"regular"`` (default), ``"adversarial"`` (PGD) or
            ``"scaat"`` (see :mod:`dance_book.zoo.remedies`).

    Returns:
        ``nn.Module`` in eval mode, taking ``[B, C, H, W]`` images in [0, 1] and returning
        logits ``[B, num_classes]``; it carries ``.classes`` (class names), ``.name`` and
        ``.trained_with`` (the training).

    Example:
        >>> import dance_book.zoo, dance_book.data
        >>> model = dance_book.zoo.load("vgg-shapes")
        >>> model(dance_book.data.shapes(4).images).shape
        torch.Size([4, 6])
    """
    stem = weights_stem(name, training)
    folder = Path(weights_dir or WEIGHTS_DIR)
    rec = record(name, weights_dir=folder, training=training)
    path = folder / f"{stem}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no weights file {path}; train the model with: {train_command(name, training)}")
    digest = file_sha256(path)
    if digest != rec["sha256"]:
        raise RuntimeError(
            f"weights file {path} has sha256 {digest}, but its record says {rec['sha256']}: the file was changed. "
            f"Restore it, or retrain with: {train_command(name, training)}"
        )
    model = build(name)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    if frozen:
        model.requires_grad_(False)
    model.classes = dataset_info(ZOO[name]["dataset"])[0]
    model.name = name
    model.trained_with = training
    return model.to(device or "cpu")


def heldout(name: str, n: Optional[int] = None) -> _data.ImageSet:
    """The held-out images of zoo model ``name``: the first ``n`` images of the Shapes stream
    with seed :data:`dance_book.data.SHAPES_TEST_SEED` (default 2,000), or the Digits test split
    (all 450, or the first ``n``). No training run ever sees them."""
    cfg = ZOO[check_name(name)]
    if cfg["dataset"] == "shapes":
        return _data.shapes(n or HELDOUT_N["shapes"], seed=_data.SHAPES_TEST_SEED)
    test = _data.digits("test")
    return test if n is None else test.subset(slice(0, n))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: _data.ImageSet, *, batch_size: int = 500) -> Tuple[float, torch.Tensor]:
    """Accuracy and confusion matrix of ``model`` on ``dataset`` (model mode is left as is;
    put it in eval mode first, as :func:`load` does).

    Returns:
        ``(accuracy, confusion)`` with ``confusion[i, j]`` the number of images of class ``i``
        predicted as class ``j`` (``[K, K]`` long tensor).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if bool((dataset.labels < 0).any()):
        raise ValueError(
            "dataset has unknown labels (-1); evaluate dataset.subset(torch.nonzero(dataset.labels >= 0).flatten()) instead"
        )
    k = len(dataset.classes)
    device = next(model.parameters()).device
    preds = []
    for start in range(0, len(dataset), batch_size):
        preds.append(model(dataset.images[start : start + batch_size].to(device)).argmax(1).cpu())
    pred = torch.cat(preds)
    confusion = torch.bincount(dataset.labels * k + pred, minlength=k * k).view(k, k)
    return int((pred == dataset.labels).sum()) / len(dataset), confusion
