"""The model zoo: shipped weights (accuracy, sha256, size), the training command, layer names,
and the paper-scale loaders, offline."""
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import dance
import dance_book.imagenet
from dance_book import data, zoo

SHAPES_MODELS = ["vgg-shapes", "alexnet-shapes", "resnet-shapes"]
ALL_MODELS = SHAPES_MODELS + ["vgg-digits"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes_heldout():
    # regenerated here, not read from anywhere: the held-out stream no training epoch sees
    return data.shapes(800, seed=data.SHAPES_TEST_SEED)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_shipped_weights_accuracy(name, shapes_heldout):
    model = zoo.load(name)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    test = shapes_heldout if name in SHAPES_MODELS else data.digits("test")
    accuracy, confusion = zoo.evaluate(model, test)
    assert accuracy >= 0.95, f"{name}: held-out accuracy {accuracy:.3f}"
    assert int(confusion.sum()) == len(test)
    assert accuracy == pytest.approx(float(confusion.diag().sum()) / len(test))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_shipped_weights_record(name):
    path = zoo.WEIGHTS_DIR / f"{name}.pt"
    rec = zoo.record(name)
    assert zoo.file_sha256(path) == rec["sha256"]
    assert path.stat().st_size <= 2 * 1024 * 1024 and rec["file_bytes"] == path.stat().st_size
    assert rec["heldout_accuracy"] >= 0.95
    assert rec["layers"] == zoo.layers(name)
    assert rec["training"]["seed"] == zoo.ZOO[name]["seed"]


def test_load_refuses_changed_weights(tmp_path):
    for suffix in (".pt", ".json"):
        shutil.copy(zoo.WEIGHTS_DIR / f"vgg-digits{suffix}", tmp_path / f"vgg-digits{suffix}")
    zoo.load("vgg-digits", weights_dir=tmp_path)  # an intact copy loads
    raw = bytearray((tmp_path / "vgg-digits.pt").read_bytes())
    raw[-100] ^= 1
    (tmp_path / "vgg-digits.pt").write_bytes(bytes(raw))
    with pytest.raises(RuntimeError, match="sha256"):
        zoo.load("vgg-digits", weights_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown model name"):
        zoo.load("vgg-cifar")


@pytest.mark.parametrize("name", ALL_MODELS)
def test_layers_are_conv_and_pool_in_forward_order(name):
    model = zoo.build(name).eval()
    names = zoo.layers(name)
    modules = dict(model.named_modules())
    assert names and all(isinstance(modules[n], zoo.LAYER_TYPES) for n in names)
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    fired = []
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: fired.append(n)) for n in names]
    channels, size = zoo.dataset_info(zoo.ZOO[name]["dataset"])[1:]
    model(torch.rand(2, channels, size, size))
    for h in hooks:
        h.remove()
    assert fired == names


def test_documented_layer_names():
    assert zoo.layers("vgg-shapes") == [
        "features.conv1_1", "features.pool1", "features.conv2_1", "features.pool2",
        "features.conv3_1", "features.conv3_2", "features.pool3",
        "features.conv4_1", "features.conv4_2", "features.pool4",
    ]
    assert zoo.layers("alexnet-shapes")[:3] == ["features.conv1", "features.pool1", "features.conv2"]
    assert zoo.layers("alexnet-shapes")[0] == "features.conv1" and zoo.build("alexnet-shapes").features.conv1.stride == (2, 2)
    assert zoo.layers("resnet-shapes")[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]


def test_model_leaves_its_input_alone():
    model = zoo.load("resnet-shapes")
    x = data.shapes(4, seed=0).images.requires_grad_(True)
    before = x.detach().clone()
    out = model(x)
    out[:, 0].sum().backward()
    assert out.shape == (4, 6) and torch.equal(x.detach(), before)
    assert x.grad is not None and x.grad.shape == x.shape
    assert not model.training


def test_training_command_learns(tmp_path):
    # The documented command, on a tiny budget: 2 epochs of Digits (about 40 steps). The main() that
    # `python -m dance_book.zoo` calls, in this process: a subprocess spent most of its time importing torch again.
    from dance_book.zoo.__main__ import main

    threads = torch.get_num_threads()
    assert main(["train", "vgg-digits", "--out", str(tmp_path), "--epochs", "2", "--threads", "1"]) == 0
    assert torch.get_num_threads() == threads  # --threads holds during training only
    rec = json.loads((tmp_path / "vgg-digits.json").read_text())
    assert rec["heldout_accuracy"] > 0.5  # chance is 0.1
    model = zoo.load("vgg-digits", weights_dir=tmp_path)  # its own sha256 checks out
    accuracy, _ = zoo.evaluate(model, data.digits("test"))
    assert accuracy == pytest.approx(rec["heldout_accuracy"])


def test_training_is_deterministic_and_covers_shapes(tmp_path):
    records = [
        zoo.train("alexnet-shapes", out=tmp_path / str(i), epochs=1, n_train=96, n_heldout=32, threads=1, log=lambda s: None)
        for i in range(2)
    ]
    assert records[0]["sha256"] == records[1]["sha256"]
    assert records[0]["heldout_n"] == 32 and "seed SHAPES_TRAIN_SEED" in records[0]["data"]["train"]
    with pytest.raises(ValueError, match="epochs"):
        zoo.train("alexnet-shapes", out=tmp_path, epochs=0)


# ---------------------------------------------------------------- paper scale, offline


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DANCE_DOWNLOAD", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_imagenet_missing_weights_fail_fast_with_a_clear_message(empty_torch_home):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as err:
        zoo.imagenet("resnet18")
    assert time.perf_counter() - start < 10  # no network attempt, no hanging
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(empty_torch_home) in message
    assert zoo.imagenet.__module__ == "dance_book.imagenet"
    assert dance_book.imagenet.weights_file("vgg16") == empty_torch_home / "vgg16-397923af.pth"


def test_imagenet_random_weights_offline(empty_torch_home):
    model = zoo.imagenet("resnet18", weights=None, device="cpu")
    assert isinstance(model, dance.Normalized) and not model.training
    assert len(model.categories) == 1000 and model.categories[0] == "tench"
    assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    x = torch.rand(2, 3, 224, 224)
    assert model(x).shape == (2, 1000)
    modules = dict(model.named_modules())
    assert all(n in modules for n in zoo.layers("resnet18"))
    vgg = zoo.layers("vgg16")  # 13 convolutions, 5 max-pools and torchvision's adaptive avgpool
    assert len(vgg) == 19 and vgg[0] == "model.features.0" and vgg[-2:] == ["model.features.30", "model.avgpool"]


def test_imagenet_loads_a_cached_file(empty_torch_home):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    empty_torch_home.mkdir(parents=True)
    torch.save(reference.state_dict(), empty_torch_home / "resnet18-f37072fd.pth")
    model = zoo.imagenet("resnet18", device="cpu")
    assert torch.equal(model.model.conv1.weight, reference.conv1.weight)
    x = torch.rand(1, 3, 224, 224)
    reference.eval()
    mean = torch.tensor(dance.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dance.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(model(x), reference((x - mean) / std), atol=1e-5)


def test_imagenet_bad_names(empty_torch_home):
    with pytest.raises(ValueError, match="name must be one of"):
        zoo.imagenet("vgg19")
    with pytest.raises(ValueError, match="weights must be"):
        zoo.imagenet("resnet18", weights="IMAGENET9K")


def _write_voc(path, width, height, objects):
    body = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, (a, b, c, d) in objects
    )
    path.write_text(f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>{body}</annotation>")


@pytest.fixture
def fixture_folder(tmp_path):
    from PIL import Image

    root = tmp_path / "val"
    boxes = tmp_path / "bbox"
    (root / "n01440764").mkdir(parents=True)
    (root / "n01443537").mkdir()
    boxes.mkdir()
    # 300 x 200 image, blue with a red box at x 100..250, y 50..150
    a = torch.zeros(200, 300, 3, dtype=torch.uint8)
    a[..., 2] = 255
    a[50:150, 100:250] = torch.tensor([255, 0, 0], dtype=torch.uint8)
    Image.fromarray(a.numpy()).save(root / "n01440764" / "ILSVRC2012_val_00000001.png")
    _write_voc(boxes / "ILSVRC2012_val_00000001.xml", 300, 200, [("n01440764", (100, 50, 250, 150))])
    # 200 x 400 portrait image, no annotation
    Image.fromarray(torch.full((400, 200, 3), 128, dtype=torch.uint8).numpy()).save(root / "n01443537" / "ILSVRC2012_val_00000002.JPEG")
    return root, boxes


def test_image_folder_preprocessing_and_boxes(fixture_folder):
    root, boxes = fixture_folder
    ds = zoo.image_folder(root, annotations=boxes, class_index={"n01440764": 0, "n01443537": 1})
    assert ds.images.shape == (2, 3, 224, 224) and float(ds.images.max()) <= 1.0
    assert ds.names == ["n01440764/ILSVRC2012_val_00000001.png", "n01443537/ILSVRC2012_val_00000002.JPEG"]
    assert ds.labels.tolist() == [0, 1] and len(ds.classes) == 1000
    # 300x200 -> 384x256 (scale 1.28), centre crop from (left 80, top 16):
    # x: 100*1.28-80 = 48, 250*1.28-80 = 240 -> clipped to 224; y: 50*1.28-16 = 48, 150*1.28-16 = 176
    assert torch.allclose(ds.boxes[0], torch.tensor([[48.0, 48.0, 224.0, 176.0]]))
    assert ds.boxes[1].shape == (0, 4) and not bool(ds.masks[1].any())
    # the box covers the red pixels: red inside (away from the edges), blue outside
    img = ds.images[0]
    assert float(img[0, 60:165, 60:215].min()) > 0.9 and float(img[2, 60:165, 60:215].max()) < 0.1
    assert float(img[2, 5:40, 5:40].min()) > 0.9
    assert bool(ds.masks[0, 0, 48:176, 48:224].all()) and int(ds.masks[0].sum()) == 128 * 176
    # the portrait: 200x400 -> 256x512, crop from top 144
    assert float((ds.images[1] - 128 / 255).abs().max()) < 0.01


def test_image_folder_labels_and_errors(fixture_folder, tmp_path, monkeypatch):
    root, boxes = fixture_folder
    ds = zoo.image_folder(root, limit=1)  # no class index, only 2 of 1000 folders: unknown labels
    assert len(ds) == 1 and ds.labels.tolist() == [-1] and ds.boxes is None and ds.masks is None
    index = tmp_path / "synsets.txt"
    index.write_text("n01443537 goldfish\nn01440764 tench\n")
    assert zoo.image_folder(root, class_index=index).labels.tolist() == [1, 0]
    with pytest.raises(FileNotFoundError, match="not a folder"):
        zoo.image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        zoo.image_folder(tmp_path / "empty")
    monkeypatch.delenv("DANCE_IMAGENET_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="DANCE_IMAGENET_DIR"):
        dance_book.imagenet.paper_images()
    monkeypatch.setenv("DANCE_IMAGENET_DIR", str(root))
    monkeypatch.setenv("DANCE_IMAGENET_BOXES", str(boxes))
    assert len(dance_book.imagenet.paper_images().boxes) == 2
