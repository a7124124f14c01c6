"""The model zoo: small trained networks shipped with the package, and the paper's ImageNet models.

CI scale (:func:`load`): three architecture families mirroring the paper's models, small
enough for a laptop CPU, trained on :func:`dance.data.shapes` (and the VGG-style one also on
:func:`dance.data.digits`):

================  ===========================================================================
name              architecture
================  ===========================================================================
vgg-shapes        VGG-style: stacks of 3x3 convolutions + 2x2 max-pools, two FC layers (main)
alexnet-shapes    AlexNet-style: a large strided 7x7 first convolution, 3x3/2 max-pools
resnet-shapes     ResNet-style: strided stem, basic blocks with batch norm and skip connections
vgg-digits        the VGG-style family on 32x32 single-channel digits
================  ===========================================================================

Every model takes images in [0, 1] and returns logits; its conv and pool layers have
readable names (:func:`layers` lists them in forward order), since the experiments generate
decoys at each of them. All ReLUs are out-of-place, so forward hooks see the conv outputs
unchanged.

Weights are trained by one command, with fixed seeds::

    python -m dance.zoo train vgg-shapes          # or: train all
    python -m dance.zoo evaluate vgg-shapes

and shipped in ``dance/weights/<name>.pt`` with a JSON record beside each (data and training
configuration, seed, held-out accuracy, sha256), which :func:`load` checks.

Paper scale (:func:`imagenet`, :func:`image_folder`): torchvision's VGG16, AlexNet, ResNet-50
and ResNet-18 with their ImageNet weights, and a loader for user-provided ImageNet images
with optional bounding boxes; see :mod:`dance.imagenet`.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import data as _data
from .imagenet import IMAGENET_MODELS, image_folder, imagenet

#: Where the shipped weights and their records live.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _standardize(x: torch.Tensor) -> torch.Tensor:
    # Fixed centring of [0, 1] pixels, part of the model: without batch norm, a plain
    # VGG/AlexNet learns far faster from zero-centred inputs. A constant affine map, so the
    # model still takes [0, 1] images and decoys keep their pixel-range constraint.
    return (x - 0.5) / 0.25


def _init_plain(model: nn.Module) -> None:
    # He initialisation as in torchvision's VGG: keeps activations alive through a plain
    # (batch-norm-free) stack of ReLU convolutions.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _fast_layout(x: torch.Tensor) -> torch.Tensor:
    # oneDNN's CPU convolutions are 2-4x faster (backward especially) on channels-last
    # tensors; converting once at the input makes every conv below use them. Values and
    # shapes are unchanged, so callers never see the difference.
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class VGGStyle(nn.Module):
    """VGG-style network: blocks of 3x3 convolutions (padding 1) + ReLU, each block closed by a
    2x2 max-pool, then ``fc1 -> relu_fc1 -> fc2``. Layer names follow the VGG papers:
    ``features.conv{block}_{i}``, ``features.relu{block}_{i}``, ``features.pool{block}``.

    Args:
        blocks: per block, the widths of its convolutions, e.g. ``((8,), (16,), (32, 32))``.
        in_channels, image_size, num_classes: input and output sizes.
        hidden: width of the hidden fully connected layer.
    """

    def __init__(self, blocks: Sequence[Sequence[int]], *, in_channels: int, image_size: int, num_classes: int, hidden: int = 128):
        super().__init__()
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        c = in_channels
        for b, widths in enumerate(blocks, start=1):
            for i, w in enumerate(widths, start=1):
                layers[f"conv{b}_{i}"] = nn.Conv2d(c, w, 3, padding=1)
                layers[f"relu{b}_{i}"] = nn.ReLU(inplace=False)
                c = w
            layers[f"pool{b}"] = nn.MaxPool2d(2)
        self.features = nn.Sequential(layers)
        side = image_size // 2 ** len(blocks)
        self.classifier = nn.Sequential(
            OrderedDict(fc1=nn.Linear(c * side * side, hidden), relu_fc1=nn.ReLU(inplace=False), fc2=nn.Linear(hidden, num_classes))
        )
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(_fast_layout(_standardize(x))), 1))


class AlexNetStyle(nn.Module):
    """AlexNet-style network for 64x64 images: a large strided first convolution (7x7,
    stride 2), a 5x5 convolution, three 3x3 convolutions, overlapping 3x3/2 max-pools, and
    three fully connected layers. Names: ``features.conv1`` ... ``features.conv5``,
    ``features.relu1`` ..., ``features.pool1``, ``features.pool2``, ``features.pool5``.
    """

    def __init__(self, *, in_channels: int = 3, num_classes: int = 6, widths=(16, 32, 48, 48, 32), hidden: int = 128):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, w1, 7, stride=2, padding=3),  # 64 -> 32
                relu1=nn.ReLU(inplace=False),
                pool1=nn.MaxPool2d(3, stride=2, padding=1),  # -> 16
                conv2=nn.Conv2d(w1, w2, 5, padding=2),
                relu2=nn.ReLU(inplace=False),
                pool2=nn.MaxPool2d(3, stride=2, padding=1),  # -> 8
                conv3=nn.Conv2d(w2, w3, 3, padding=1),
                relu3=nn.ReLU(inplace=False),
                conv4=nn.Conv2d(w3, w4, 3, padding=1),
                relu4=nn.ReLU(inplace=False),
                conv5=nn.Conv2d(w4, w5, 3, padding=1),
                relu5=nn.ReLU(inplace=False),
                pool5=nn.MaxPool2d(3, stride=2, padding=1),  # -> 4
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(w5 * 16, hidden),
                relu_fc1=nn.ReLU(inplace=False),
                fc2=nn.Linear(hidden, hidden),
                relu_fc2=nn.ReLU(inplace=False),
                fc3=nn.Linear(hidden, num_classes),
            )
        )
        _init_plain(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(_fast_layout(_standardize(x))), 1))


class BasicBlock(nn.Module):
    """ResNet basic block: ``conv1 -> bn1 -> relu1 -> conv2 -> bn2``, plus the shortcut
    (identity, or ``shortcut.conv`` 1x1 + ``shortcut.bn`` when the shape changes), then
    ``relu2``. Separate ReLU modules (out-of-place) so that hooks fire once per use."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                OrderedDict(conv=nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), bn=nn.BatchNorm2d(channels))
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetStyle(nn.Module):
    """ResNet-style network for 64x64 images: stem ``conv1`` (5x5, stride 2) + ``bn1`` +
    ``relu``, then ``layer1`` (16 channels, 32x32), ``layer2`` (32, 16x16), ``layer3``
    (64, 8x8) of basic blocks, global ``avgpool`` and ``fc``; names as in torchvision's
    ResNets (``layer2.0.conv1``, ...)."""

    def __init__(self, *, in_channels: int = 3, num_classes: int = 6, widths=(16, 32, 64), blocks=(1, 1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=False)
        c = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks), start=1):
            stages = []
            for j in range(n):
                stages.append(BasicBlock(c, w, stride=2 if (i > 1 and j == 0) else 1))
                c = w
            setattr(self, f"layer{i}", nn.Sequential(*stages))
        self.n_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(_fast_layout(x))))
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


#: The CI-scale zoo: architecture, data and training configuration of every shipped model.
#: Shapes models see fresh images every epoch (seeds ``SHAPES_TRAIN_SEED + epoch``), so
#: they never see the held-out stream; Digits models train on the fixed train split with
#: small random shifts.
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


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in ZOO:
        raise ValueError(f"unknown model name {name!r}; the zoo has {sorted(ZOO)} (ImageNet models: use dance.zoo.imagenet)")
    return name


def _dataset_info(dataset: str) -> Tuple[Tuple[str, ...], int, int]:
    if dataset == "shapes":
        return _data.SHAPE_CLASSES, 3, 64
    return _data.DIGIT_CLASSES, 1, _data.DIGITS_SIZE


def build(name: str) -> nn.Module:
    """The untrained architecture of zoo model ``name`` (random weights, train mode)."""
    cfg = ZOO[_check_name(name)]
    classes, channels, size = _dataset_info(cfg["dataset"])
    if cfg["arch"] == "vgg":
        return VGGStyle(cfg["blocks"], in_channels=channels, image_size=size, num_classes=len(classes), hidden=cfg["hidden"])
    if cfg["arch"] == "alexnet":
        return AlexNetStyle(in_channels=channels, num_classes=len(classes), widths=cfg["widths"], hidden=cfg["hidden"])
    return ResNetStyle(in_channels=channels, num_classes=len(classes), widths=cfg["widths"], blocks=cfg["blocks"])


_LAYER_TYPES = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


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
        >>> import dance.zoo
        >>> dance.zoo.layers("resnet-shapes")[:3]
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
    return [n for n, m in model.named_modules() if isinstance(m, _LAYER_TYPES)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(name: str, *, weights_dir: Union[str, Path, None] = None) -> dict:
    """The JSON record shipped beside a model's weights (config, seed, accuracy, sha256)."""
    _check_name(name)
    path = Path(weights_dir or WEIGHTS_DIR) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no record {path}; train the model with: python -m dance.zoo train {name}")
    return json.loads(path.read_text())


def load(name: str, *, weights_dir: Union[str, Path, None] = None, device: Union[str, torch.device, None] = None, frozen: bool = True) -> nn.Module:
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

    Returns:
        ``nn.Module`` in eval mode, taking ``[B, C, H, W]`` images in [0, 1] and returning
        logits ``[B, num_classes]``; it carries ``.classes`` (class names) and ``.name``.

    Example:
        >>> import dance.zoo, dance.data
        >>> model = dance.zoo.load("vgg-shapes")
        >>> model(dance.data.shapes(4).images).shape
        torch.Size([4, 6])
    """
    _check_name(name)
    folder = Path(weights_dir or WEIGHTS_DIR)
    rec = record(name, weights_dir=folder)
    path = folder / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no weights file {path}; train the model with: python -m dance.zoo train {name}")
    digest = _sha256(path)
    if digest != rec["sha256"]:
        raise RuntimeError(
            f"weights file {path} has sha256 {digest}, but its record says {rec['sha256']}: the file was changed. "
            f"Restore it, or retrain with: python -m dance.zoo train {name}"
        )
    model = build(name)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    if frozen:
        model.requires_grad_(False)
    model.classes = _dataset_info(ZOO[name]["dataset"])[0]
    model.name = name
    return model.to(device or "cpu")


def heldout(name: str, n: Optional[int] = None) -> _data.ImageSet:
    """The held-out images of zoo model ``name``: the first ``n`` images of the Shapes stream
    with seed :data:`dance.data.SHAPES_TEST_SEED` (default 2,000), or the Digits test split
    (all 450, or the first ``n``). No training run ever sees them."""
    cfg = ZOO[_check_name(name)]
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
        raise ValueError("dataset has unknown labels (-1); evaluate dataset.subset(torch.nonzero(dataset.labels >= 0).flatten()) instead")
    k = len(dataset.classes)
    device = next(model.parameters()).device
    preds = []
    for start in range(0, len(dataset), batch_size):
        preds.append(model(dataset.images[start : start + batch_size].to(device)).argmax(1).cpu())
    pred = torch.cat(preds)
    confusion = torch.bincount(dataset.labels * k + pred, minlength=k * k).view(k, k)
    return int((pred == dataset.labels).sum()) / len(dataset), confusion


def _random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    # Translate each image by up to `shift` pixels (zero fill), all images at once.
    if shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
    rows = (dy.view(b, 1) + torch.arange(h)).view(b, 1, h, 1).expand(b, x.shape[1], h, w + 2 * shift)
    out = padded.gather(2, rows)
    cols = (dx.view(b, 1) + torch.arange(w)).view(b, 1, 1, w).expand(b, x.shape[1], h, w)
    return out.gather(3, cols)


def train(
    name: str,
    *,
    out: Union[str, Path, None] = None,
    epochs: Optional[int] = None,
    n_train: Optional[int] = None,
    n_heldout: Optional[int] = None,
    seed: Optional[int] = None,
    threads: Optional[int] = 1,
    log=None,
) -> dict:
    """Train zoo model ``name`` with its fixed configuration (:data:`ZOO`), save the weights
    to ``out/<name>.pt`` and the record to ``out/<name>.json``, and return the record.

    Args:
        name: zoo model name.
        out: output folder (default: the package's ``weights`` folder, i.e. overwrite the
            shipped weights).
        epochs, n_train, seed: override the configuration (for quick runs and tests);
            ``n_train`` is images per epoch for Shapes, a prefix of the train split for Digits.
        n_heldout: size of the held-out set for the recorded accuracy.
        threads: ``torch.set_num_threads`` during training (restored afterwards); None keeps it.
        log: where progress lines go (default: printed).
    """
    cfg = dict(ZOO[_check_name(name)])
    for key, value in (("epochs", epochs), ("n_train", n_train), ("seed", seed)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
                raise ValueError(f"{key} must be a {'non-negative' if key == 'seed' else 'positive'} int, got {value!r}")
            cfg[key] = value
    out = Path(out or WEIGHTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda line: print(line, flush=True))
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _train(name, cfg, out, n_heldout, log)
    finally:
        torch.set_num_threads(old_threads)


def _train(name: str, cfg: dict, out: Path, n_heldout: Optional[int], log) -> dict:
    t_start = time.perf_counter()
    torch.manual_seed(cfg["seed"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    model = build(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if cfg["dataset"] == "digits":
        train_set = _data.digits("train")
        if cfg["n_train"]:
            train_set = train_set.subset(slice(0, cfg["n_train"]))
        n_per_epoch = len(train_set)
    else:
        n_per_epoch = cfg["n_train"]
    steps_per_epoch = math.ceil(n_per_epoch / cfg["batch_size"])
    total = cfg["epochs"] * steps_per_epoch
    # one-cycle: warm up, then cosine decay; robust without tuning per model
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg["lr"], total_steps=total, pct_start=0.15)
    model.train()
    for epoch in range(cfg["epochs"]):
        t_epoch = time.perf_counter()
        if cfg["dataset"] == "shapes":
            # fresh images every epoch: a stream the held-out seed never shares
            train_set = _data.shapes(n_per_epoch, seed=_data.SHAPES_TRAIN_SEED + epoch)
        order = torch.randperm(len(train_set), generator=gen)
        total_loss, correct = 0.0, 0
        for start in range(0, len(order), cfg["batch_size"]):
            idx = order[start : start + cfg["batch_size"]]
            x = _random_shift(train_set.images[idx], cfg["shift"], gen)
            y = train_set.labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        log(
            f"{name} epoch {epoch + 1}/{cfg['epochs']}: loss {total_loss / len(order):.4f}, "
            f"train accuracy {correct / len(order):.4f} ({time.perf_counter() - t_epoch:.1f} s)"
        )
    train_seconds = time.perf_counter() - t_start
    model.eval()
    test = heldout(name, n_heldout)
    accuracy, _ = evaluate(model, test)
    log(f"{name}: held-out accuracy {accuracy:.4f} on {len(test)} images ({train_seconds:.0f} s of training)")

    # Save a plain, contiguous state_dict: the file's bytes then depend only on the values.
    state = OrderedDict((k, v.detach().contiguous().clone()) for k, v in model.state_dict().items())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    weights_path = out / f"{name}.pt"
    weights_path.write_bytes(buffer.getvalue())
    classes, channels, size = _dataset_info(cfg["dataset"])
    rec = {
        "name": name,
        "architecture": cfg["arch"],
        "classes": list(classes),
        "input": {"channels": channels, "size": size, "range": [0.0, 1.0]},
        "layers": layers(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": (
            {
                "dataset": "dance.data.shapes",
                "train": f"{n_per_epoch} fresh images per epoch, seed SHAPES_TRAIN_SEED + epoch "
                f"({_data.SHAPES_TRAIN_SEED} .. {_data.SHAPES_TRAIN_SEED + cfg['epochs'] - 1})",
                "heldout": f"first {len(test)} images of seed SHAPES_TEST_SEED ({_data.SHAPES_TEST_SEED})",
            }
            if cfg["dataset"] == "shapes"
            else {
                "dataset": "dance.data.digits (sklearn load_digits, upsampled to 32x32, 1 channel)",
                "train": f"train split, {n_per_epoch} images, random shifts of up to {cfg['shift']} px",
                "heldout": f"test split, {len(test)} images",
            }
        ),
        "training": {
            "epochs": cfg["epochs"],
            "batch_size": cfg["batch_size"],
            "optimizer": "AdamW",
            "lr": cfg["lr"],
            "schedule": "OneCycleLR(pct_start=0.15)",
            "weight_decay": cfg["weight_decay"],
            "seed": cfg["seed"],
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "seconds": round(train_seconds, 1),
        },
        "heldout_accuracy": accuracy,
        "heldout_n": len(test),
        "file_bytes": weights_path.stat().st_size,
        "sha256": _sha256(weights_path),
        "command": f"python -m dance.zoo train {name}",
    }
    (out / f"{name}.json").write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dance.zoo", description="Train and evaluate the CI-scale model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train zoo models with their fixed configuration and save weights + record")
    p_train.add_argument("names", nargs="+", help=f"model names ({', '.join(ZOO)}) or 'all'")
    p_train.add_argument("--out", default=None, help="output folder (default: the package's weights folder)")
    p_train.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p_train.add_argument("--n-train", type=int, default=None, help="override the training images (per epoch for Shapes)")
    p_train.add_argument("--n-heldout", type=int, default=None, help="held-out images for the recorded accuracy")
    p_train.add_argument("--seed", type=int, default=None, help="override the seed")
    p_train.add_argument("--threads", type=int, default=1, help="torch threads (default 1: training is deterministic and, on a shared machine, fastest with one)")
    p_eval = sub.add_parser("evaluate", help="held-out accuracy of shipped weights")
    p_eval.add_argument("names", nargs="+")
    p_eval.add_argument("--weights-dir", default=None)
    sub.add_parser("list", help="list the zoo")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, cfg in ZOO.items():
            print(f"{name}: {cfg['arch']} on {cfg['dataset']}")
        return 0
    names = list(ZOO) if args.names == ["all"] else args.names
    for name in names:
        _check_name(name)
    for name in names:
        if args.command == "train":
            rec = train(name, out=args.out, epochs=args.epochs, n_train=args.n_train, n_heldout=args.n_heldout, seed=args.seed, threads=args.threads)
            print(f"saved {name}: accuracy {rec['heldout_accuracy']:.4f}, {rec['file_bytes']} bytes, sha256 {rec['sha256']}")
        else:
            model = load(name, weights_dir=args.weights_dir)
            accuracy, _ = evaluate(model, heldout(name))
            print(f"{name}: held-out accuracy {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
