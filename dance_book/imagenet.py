"""Paper scale: torchvision's ImageNet models and user-provided ImageNet images.

Nothing here downloads unless asked to. :func:`imagenet` looks for torchvision's weights
file in the torch cache (``torch.hub.get_dir()/checkpoints``) and, when it is missing,
raises an error naming the file, its URL and the folder to put it in; downloading happens
only with ``download=True`` or ``DANCE_DOWNLOAD=1``, with a network timeout.

:func:`image_folder` reads ImageNet validation images (any folder of JPEG/PNG files) with
the standard preprocessing (resize the short side to 256, centre-crop 224, [0, 1]), and
optional ILSVRC bounding boxes (Pascal VOC XML files), rescaled to the crop, for the
localization experiment.
"""
from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from .data import ImageSet
from dance.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalized

#: The torchvision models the paper's experiments use (plus ResNet-18, a cheaper ResNet).
IMAGENET_MODELS: Tuple[str, ...] = ("vgg16", "alexnet", "resnet50", "resnet18")
#: The original ImageNet weights of each model (as in the paper's time; for ResNet-50,
#: torchvision's ``DEFAULT`` is the later, better ``IMAGENET1K_V2``).
DEFAULT_WEIGHTS = "IMAGENET1K_V1"
#: Set to 1 to let :func:`imagenet` download missing weights.
DOWNLOAD_ENV = "DANCE_DOWNLOAD"
#: Folder of ImageNet images for paper scale, and optional folder of their XML boxes.
IMAGES_ENV = "DANCE_IMAGENET_DIR"
BOXES_ENV = "DANCE_IMAGENET_BOXES"
#: Test-only: set to 1 (together with ``DANCE_PAPER_SMOKE=1``) to run paper scale with randomly
#: initialised models, for the CI smoke test; the book refuses it otherwise.
RANDOM_WEIGHTS_ENV = "DANCE_TEST_RANDOM_WEIGHTS"
#: Seed of the random initialisation under the test-only switch (the same model in every process).
RANDOM_WEIGHTS_SEED = 0

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_WNID = re.compile(r"^n\d{8}$")


def _check_model_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in IMAGENET_MODELS:
        raise ValueError(f"name must be one of {IMAGENET_MODELS}, got {name!r}")
    return name


def _weights_enum(name: str, weights):
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    if isinstance(weights, str):
        try:
            return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
        except KeyError:
            raise ValueError(
                f"weights must be None, 'DEFAULT' or one of {[w.name for w in enum]} for {name}, got {weights!r}"
            ) from None
    if isinstance(weights, enum):
        return weights
    raise TypeError(f"weights must be None, a str or a {enum.__name__}, got {type(weights).__name__}")


def categories(name: str = "resnet18") -> List[str]:
    """The 1,000 ImageNet class names, in label order, from torchvision's weights metadata
    (no download needed)."""
    return list(_weights_enum(_check_model_name(name), DEFAULT_WEIGHTS).meta["categories"])


def weights_file(name: str, weights=DEFAULT_WEIGHTS) -> Path:
    """Where torchvision keeps (or would keep) the weights file of model ``name``:
    ``torch.hub.get_dir()/checkpoints/<file name of the weights' URL>``. ``TORCH_HOME``
    moves it."""
    w = _weights_enum(_check_model_name(name), weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def imagenet(
    name: str,
    *,
    weights: Union[str, None, object] = DEFAULT_WEIGHTS,
    download: Optional[bool] = None,
    device: Union[str, torch.device, None] = None,
    frozen: bool = True,
) -> Normalized:
    """A torchvision ImageNet model, wrapped to take [0, 1] images, in eval mode.

    Args:
        name: ``"vgg16"``, ``"alexnet"``, ``"resnet50"`` or ``"resnet18"``.
        weights: a weights name of torchvision's API (``"IMAGENET1K_V1"``, the default, or
            ``"DEFAULT"``, ...), a weights enum member, or ``None`` for random
            initialisation (no file needed; what the offline tests use).
        download: allow downloading missing weights (with a 60 s network timeout). ``None``
            (default) reads the environment variable ``DANCE_DOWNLOAD`` (``1`` allows).
            Without it a missing file raises :class:`FileNotFoundError` at once.
        device: where to put the model (default :func:`dance_book.scale.default_device`).
        frozen: turn off gradients for the parameters.

    Returns:
        :class:`dance.Normalized` wrapping the network with ImageNet's mean and std, so
        the layer names gain the prefix ``model.`` (see :func:`dance_book.zoo.layers`). It
        carries ``.categories`` (the 1,000 class names from the weights' metadata) and
        ``.name``. All ReLUs are made out-of-place, so forward hooks see raw conv outputs.

    Raises:
        FileNotFoundError: the weights are not in the torch cache and downloading is not
            allowed; the message names the file, its URL and the folder.

    Example:
        >>> import torch, dance_book.zoo
        >>> model = dance_book.zoo.imagenet("resnet18", weights=None)  # random weights, offline
        >>> model(torch.rand(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    import torchvision

    _check_model_name(name)
    w = None if weights is None else _weights_enum(name, weights)
    state = None
    if w is not None:
        # the cache is checked before anything is built: a missing file fails at once
        path = weights_file(name, w)
        if download is None:
            download = os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")
        if not path.exists():
            if not download:
                raise FileNotFoundError(
                    f"ImageNet weights {w} for {name} are not in the torch cache. Place the file "
                    f"{path.name} (from {w.url}) in the folder {path.parent} "
                    f"(set TORCH_HOME to use another cache), or allow the download with "
                    f"dance_book.zoo.imagenet({name!r}, download=True) or {DOWNLOAD_ENV}=1."
                )
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(60)  # a dead network fails instead of hanging
            try:
                torch.hub.load_state_dict_from_url(w.url, progress=True, check_hash=True)
            finally:
                socket.setdefaulttimeout(previous)
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = torchvision.models.get_model(name, weights=None)
    if state is not None:
        model.load_state_dict(state)
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    wrapped = Normalized(model, IMAGENET_MEAN, IMAGENET_STD).eval()
    if frozen:
        wrapped.requires_grad_(False)
    wrapped.categories = categories(name)
    wrapped.name = name
    if device is None:
        from .scale import default_device

        device = default_device()
    return wrapped.to(device)


def random_weights_requested() -> bool:
    """Whether the test-only ``DANCE_TEST_RANDOM_WEIGHTS`` switch is on."""
    return os.environ.get(RANDOM_WEIGHTS_ENV, "").strip().lower() in ("1", "true", "yes")


def weights_identity() -> str:
    """Which weights paper-scale models get: ``"random"`` under the test-only switch, else :data:`DEFAULT_WEIGHTS`."""
    return "random" if random_weights_requested() else DEFAULT_WEIGHTS


def paper_model(name: str, *, device: Union[str, torch.device, None] = None) -> Normalized:
    """The paper-scale model ``name``: :func:`imagenet` with its ImageNet weights.

    Randomly initialised weights (seeded, identical in every process) only under the test-only
    switches ``DANCE_TEST_RANDOM_WEIGHTS=1`` and ``DANCE_PAPER_SMOKE=1`` together, for the CI smoke
    test: a paper-scale result of a random network would be meaningless.

    Raises:
        ValueError: ``DANCE_TEST_RANDOM_WEIGHTS`` is set without ``DANCE_PAPER_SMOKE``.
        FileNotFoundError: the weights are missing (see :func:`imagenet`).

    Example:
        >>> import os; from dance_book.imagenet import paper_model
        >>> os.environ["DANCE_TEST_RANDOM_WEIGHTS"] = "1"
        >>> paper_model("alexnet")
        Traceback (most recent call last):
        ...
        ValueError: DANCE_TEST_RANDOM_WEIGHTS=1 is a test-only switch ...
        >>> del os.environ["DANCE_TEST_RANDOM_WEIGHTS"]
    """
    if not random_weights_requested():
        return imagenet(name, device=device)
    from .experiments.settings import SMOKE_ENV, smoke_enabled

    if not smoke_enabled():
        raise ValueError(
            f"{RANDOM_WEIGHTS_ENV}=1 is a test-only switch for the smoke test ({SMOKE_ENV}=1): paper scale "
            f"refuses randomly initialised models, whose maps and scores mean nothing. Unset "
            f"{RANDOM_WEIGHTS_ENV} and provide the ImageNet weights (see dance_book.imagenet.imagenet)."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        return imagenet(name, weights=None, device=device)


def _parse_voc(path: Path) -> Tuple[Optional[Tuple[float, float]], List[str], List[List[float]]]:
    """Pascal VOC XML -> ((width, height) or None, object names, boxes [xmin, ymin, xmax, ymax])."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"annotation file {path} is not valid XML: {err}") from None
    size = root.find("size")
    wh = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        wh = (float(size.findtext("width")), float(size.findtext("height")))
    names, boxes = [], []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        try:
            boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        except (TypeError, ValueError):
            raise ValueError(f"annotation file {path} has an object without numeric xmin/ymin/xmax/ymax") from None
        names.append((obj.findtext("name") or "").strip())
    return wh, names, boxes


def _load_class_index(class_index) -> Dict[str, int]:
    if isinstance(class_index, dict):
        return {str(k): int(v) for k, v in class_index.items()}
    path = Path(class_index)
    if not path.is_file():
        raise FileNotFoundError(f"class_index file {path} does not exist")
    # one class per line, in label order, the WordNet id first (e.g. LOC_synset_mapping.txt)
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return {w: i for i, w in enumerate(wnids)}


def image_folder(
    root: Union[str, Path],
    *,
    annotations: Union[str, Path, None] = None,
    class_index: Union[Dict[str, int], str, Path, None] = None,
    limit: Optional[int] = None,
    start: int = 0,
    resize: int = 256,
    crop: int = 224,
) -> ImageSet:
    """Load a folder of ImageNet images (e.g. ILSVRC2012 validation), preprocessed as for the
    torchvision models: short side resized to ``resize`` (antialiased), centre crop
    ``crop x crop``, RGB in [0, 1]. Normalisation is left to :func:`imagenet`'s wrapper.

    Bounding boxes come from ILSVRC's Pascal VOC XML files (``<object><name>n01440764</name>
    <bndbox><xmin>..``): one file per image with the image's stem (``ILSVRC2012_val_00000001.xml``),
    found recursively under ``annotations``, or beside the image when ``annotations`` is None.
    Boxes are mapped through the same resize and crop (coordinates taken as continuous pixel
    positions), clipped to the crop, and dropped when nothing of them is left.

    Labels: the image's WordNet id is its folder name (``val/n01440764/x.JPEG``) or the
    first object's name in its XML. ``class_index`` maps ids to labels (a dict, or a text file
    with one id per line in label order, e.g. ``LOC_synset_mapping.txt``); if None and
    ``root`` holds exactly 1,000 WordNet-id folders, their sorted order is used (the standard
    order). Otherwise labels are -1: explain the predicted class instead.

    Args:
        root: folder of images (searched recursively, sorted by relative path).
        annotations: folder of XML files, optional.
        class_index: see above.
        limit: load only the first ``limit`` images (after ``start``).
        start: skip the first ``start`` images (in sorted order), so that a shard reads only its own.
        resize, crop: preprocessing sizes.

    Returns:
        :class:`dance_book.data.ImageSet` with ``images [N, 3, crop, crop]``, ``labels [N]``,
        ``classes`` (the 1,000 ImageNet names), ``names`` (relative paths), and, when any XML
        was found, ``boxes`` (list of ``[K_i, 4]`` tensors, ``(x_min, y_min, x_max, y_max)``)
        and ``masks [N, 1, crop, crop]`` (the union of each image's boxes).

    Example:
        >>> import dance_book.zoo
        >>> val = dance_book.zoo.image_folder("/data/imagenet/val", annotations="/data/imagenet/bbox", limit=100)  # doctest: +SKIP
    """
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, resize as tv_resize

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root {root} is not a folder of images")
    if not (isinstance(resize, int) and isinstance(crop, int) and 0 < crop <= resize):
        raise ValueError(f"resize and crop must be ints with 0 < crop <= resize, got resize={resize!r}, crop={crop!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    files = _image_files(root)
    if not files:
        raise ValueError(f"no images ({', '.join(_IMAGE_EXTENSIONS)}) found under {root}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative int, got {start!r}")
    files = files[start:] if limit is None else files[start:start + limit]
    if not files:
        raise ValueError(f"start={start} skips every image under {root}")
    xml_by_stem: Dict[str, Path] = {}
    if annotations is not None:
        annotations = Path(annotations)
        if not annotations.is_dir():
            raise FileNotFoundError(f"annotations {annotations} is not a folder of XML files")
        xml_by_stem = {p.stem: p for p in annotations.rglob("*.xml")}

    if class_index is not None:
        index = _load_class_index(class_index)
    else:
        folders = [p.name for p in root.iterdir() if p.is_dir() and _WNID.match(p.name)]
        index = {w: i for i, w in enumerate(sorted(folders))} if len(folders) == 1000 else {}

    images, labels, all_boxes, names = [], [], [], []
    any_xml = False
    for path in files:
        with Image.open(path) as img:
            pil = img.convert("RGB")
        w0, h0 = pil.size
        x = tv_resize(pil_to_tensor(pil), [resize], antialias=True)  # short side -> resize
        h1, w1 = x.shape[-2:]
        top, left = int(round((h1 - crop) / 2.0)), int(round((w1 - crop) / 2.0))  # as CenterCrop
        images.append(x[:, top : top + crop, left : left + crop].float().div_(255))
        names.append(path.relative_to(root).as_posix())

        xml = xml_by_stem.get(path.stem) if annotations is not None else path.with_suffix(".xml")
        boxes = torch.zeros(0, 4)
        objects: List[str] = []
        if xml is not None and xml.is_file():
            any_xml = True
            wh, objects, raw = _parse_voc(xml)
            if raw:
                b = torch.tensor(raw, dtype=torch.float32)
                # the XML's own size frame, if given, mapped to the actual image
                sx0, sy0 = (w0 / wh[0], h0 / wh[1]) if wh else (1.0, 1.0)
                b[:, [0, 2]] = (b[:, [0, 2]] * sx0 * (w1 / w0) - left).clamp(0, crop)
                b[:, [1, 3]] = (b[:, [1, 3]] * sy0 * (h1 / h0) - top).clamp(0, crop)
                boxes = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
        all_boxes.append(boxes)
        wnid = path.parent.name if _WNID.match(path.parent.name) else (objects[0] if objects else None)
        labels.append(index.get(wnid, -1) if wnid else -1)

    masks = None
    if any_xml:
        masks = torch.zeros(len(files), 1, crop, crop, dtype=torch.bool)
        for i, boxes in enumerate(all_boxes):
            for x0, y0, x1, y1 in boxes.tolist():
                masks[i, 0, int(y0) : int(-(-y1 // 1)), int(x0) : int(-(-x1 // 1))] = True
    return ImageSet(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.long),
        classes=tuple(categories()),
        masks=masks,
        boxes=all_boxes if any_xml else None,
        names=names,
    )


def _image_files(root: Path) -> List[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_EXTENSIONS),
                  key=lambda p: p.relative_to(root).as_posix())


def image_set_digest(root: Union[str, Path], annotations: Union[str, Path, None] = None) -> str:
    """A content hash of an image folder as :func:`image_folder` reads it: every image's relative
    path and size, and every box file's relative path and bytes (beside the images or under
    ``annotations``). Another folder, an added, removed, renamed or resized image, or a changed box
    changes it; it reads no image's pixels, so it costs a directory walk even for 50,000 images.

    Returns:
        16 hex digits.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.png").write_bytes(b"x")
        >>> before = image_set_digest(d); _ = (d / "a.xml").write_text("<annotation/>")
        >>> before == image_set_digest(d)
        False
    """
    import hashlib

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root {root} is not a folder of images")
    h = hashlib.sha256()
    for path in _image_files(root):
        h.update(f"image {path.relative_to(root).as_posix()} {path.stat().st_size}\n".encode())
    box_root = Path(annotations) if annotations is not None else root
    for path in sorted(box_root.rglob("*.xml"), key=lambda p: p.relative_to(box_root).as_posix()):
        h.update(f"boxes {path.relative_to(box_root).as_posix()}\n".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def paper_folders() -> Tuple[Optional[str], Optional[str]]:
    """``(DANCE_IMAGENET_DIR, DANCE_IMAGENET_BOXES)`` as set (None where unset or empty)."""
    return (os.environ.get(IMAGES_ENV, "").strip() or None, os.environ.get(BOXES_ENV, "").strip() or None)


def paper_images(limit: Optional[int] = None, *, start: int = 0, resize: int = 256, crop: int = 224) -> ImageSet:
    """The user's ImageNet images for paper scale: :func:`image_folder` on the folder named by
    ``DANCE_IMAGENET_DIR``, with boxes from ``DANCE_IMAGENET_BOXES`` when set (else from XML files
    beside the images, if any).

    Args:
        limit, start: load ``limit`` images after skipping ``start`` (sorted order).
        resize, crop: preprocessing sizes of :func:`image_folder` (the smoke test uses tiny crops).

    Raises:
        FileNotFoundError: ``DANCE_IMAGENET_DIR`` is unset or not a folder; the message says
            what to provide.
    """
    folder = os.environ.get(IMAGES_ENV, "").strip()
    if not folder or not Path(folder).is_dir():
        raise FileNotFoundError(
            f"paper scale needs ImageNet images: set {IMAGES_ENV} to a folder of ImageNet validation images "
            f"(e.g. ILSVRC2012_img_val, optionally in WordNet-id subfolders), and {BOXES_ENV} to the folder of "
            f"their bounding-box XML files (ILSVRC2012_bbox_val) for the localization experiment"
            + (f"; {folder!r} is not a folder" if folder else "")
        )
    boxes = os.environ.get(BOXES_ENV, "").strip() or None
    return image_folder(folder, annotations=boxes, limit=limit, start=start, resize=resize, crop=crop)
