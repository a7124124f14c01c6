"""The model zoo: small trained networks shipped with the package, and the paper's ImageNet models.

CI scale (:func:`load`): three architecture families mirroring the paper's models, small
enough for a laptop CPU, trained on :func:`dance_book.data.shapes` (and the VGG-style one also on
:func:`dance_book.data.digits`):

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

    python -m dance_book.zoo train vgg-shapes          # or: train all
    python -m dance_book.zoo evaluate vgg-shapes
    python -m dance_book.zoo train vgg-shapes --training adversarial   # or: --training scaat

and shipped in ``dance_book/weights/<name>.pt`` with a JSON record beside each (data and training
configuration, seed, held-out accuracy, sha256), which :func:`load` checks. The remedies'
variants (PGD adversarial training and SCAAT, :mod:`dance_book.zoo.remedies`) are stored as
``<name>-adversarial.pt`` and ``<name>-scaat.pt`` and loaded with ``load(name, training=...)``.

Paper scale (:func:`imagenet`, :func:`image_folder`): torchvision's VGG16, AlexNet, ResNet-50
and ResNet-18 with their ImageNet weights, and a loader for user-provided ImageNet images
with optional bounding boxes; see :mod:`dance_book.imagenet`.
"""
from ..imagenet import IMAGENET_MODELS, image_folder, imagenet
from .models import AlexNetStyle, BasicBlock, ResNetStyle, VGGStyle
from .registry import (HELDOUT_N, LAYER_TYPES, WEIGHTS_DIR, ZOO, build, check_name, dataset_info, evaluate, file_sha256, heldout, layers,
                       load, record, train_command, weights_stem)
from .remedies import PGD, SCAAT, TRAININGS, PGDSettings, ScaatReading, low_saliency_mask, pgd_linf, scaat_examples, update_q
from .train import train

__all__ = [
    "IMAGENET_MODELS",
    "AlexNetStyle",
    "BasicBlock",
    "ResNetStyle",
    "VGGStyle",
    "HELDOUT_N",
    "LAYER_TYPES",
    "WEIGHTS_DIR",
    "ZOO",
    "build",
    "check_name",
    "dataset_info",
    "evaluate",
    "file_sha256",
    "heldout",
    "image_folder",
    "imagenet",
    "layers",
    "load",
    "record",
    "train",
    "train_command",
    "weights_stem",
    "PGD",
    "PGDSettings",
    "SCAAT",
    "ScaatReading",
    "TRAININGS",
    "low_saliency_mask",
    "pgd_linf",
    "scaat_examples",
    "update_q",
]
