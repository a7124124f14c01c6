"""Paper scale on a tiny fake ImageNet folder (random-init torchvision models under the test-only
switches): the experiments run with and without boxes, measures that need masks are reported as
not available instead of crashing, and the cache key follows the image set and library versions.

``python tests/test_paper_scale.py DIR`` writes the two fake folders (``DIR/images`` with boxes
beside the images, ``DIR/plain`` without) for the notebook smoke run (``make paper-smoke``).
"""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dance_book.experiments as E
from dance_book import imagenet
from dance_book.experiments import cache, inputs
from dance_book.experiments import localization as Lc
from dance_book.experiments.scores import scores
from dance_book.experiments.settings import PAPER_SMOKE
from fake_imagenet import N_FAKE, write_fake_imagenet


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake-imagenet")
    return {"boxes": write_fake_imagenet(root / "images"), "plain": write_fake_imagenet(root / "plain", boxes=False)}


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module: the tests reuse each other's decoys, as the chapters do."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def paper(monkeypatch, shared_cache, folders):
    """Switch to the paper-scale smoke settings; returns a function selecting the folder."""
    monkeypatch.setenv("DANCE_SCALE", "paper")
    monkeypatch.setenv("DANCE_PAPER_SMOKE", "1")
    monkeypatch.setenv("DANCE_TEST_RANDOM_WEIGHTS", "1")
    monkeypatch.setenv("DANCE_CACHE_DIR", str(shared_cache))
    monkeypatch.delenv("DANCE_IMAGENET_BOXES", raising=False)
    monkeypatch.delenv("DANCE_CACHE", raising=False)
    inputs.load_model.cache_clear()

    def use(kind: str):
        monkeypatch.setenv("DANCE_IMAGENET_DIR", str(folders[kind]))
        return E.settings()

    yield use
    inputs.load_model.cache_clear()


def test_random_weights_are_refused_outside_the_smoke_test(monkeypatch):
    monkeypatch.setenv("DANCE_TEST_RANDOM_WEIGHTS", "1")
    monkeypatch.delenv("DANCE_PAPER_SMOKE", raising=False)
    with pytest.raises(ValueError, match="test-only switch"):
        imagenet.paper_model("alexnet")


def test_smoke_settings_are_paper_scale_in_miniature(monkeypatch):
    monkeypatch.setenv("DANCE_SCALE", "paper")
    monkeypatch.delenv("DANCE_PAPER_SMOKE", raising=False)
    assert E.settings() is E.PAPER
    monkeypatch.setenv("DANCE_PAPER_SMOKE", "1")
    s = E.settings()
    assert (s.scale, s.main_model, s.architectures) == (E.PAPER.scale, E.PAPER.main_model, E.PAPER.architectures)
    assert s.n_fidelity < E.PAPER.n_fidelity


def test_chapter_sizes_fit_the_smoke_folder():
    """Found by running every chapter at paper scale: the sanity chapter and the c sweep asked for
    more images (8, 24) than the smoke folder holds."""
    from dance_book.experiments import hyperparameters as H
    from dance_book.experiments import sanity as Sa

    assert Sa.sanity_n(PAPER_SMOKE) <= N_FAKE and H.sweep_size(PAPER_SMOKE) <= N_FAKE
    assert (Sa.sanity_n(E.PAPER), H.sweep_size(E.PAPER)) == (Sa.SANITY_N["paper"], H.SWEEP_IMAGES["paper"])


def test_key_layers_after_a_relu_decoy_layer(paper, folders):
    """Found the same way: VGG16's decoy layer ``model.features.3`` is a ReLU, which the list of
    conv/pool layers leaves out; the first pool after it is ``model.features.4``."""
    from dance_book import zoo
    from dance_book.experiments import representation as Rp

    paper("plain")
    layers = zoo.layers("vgg16")
    assert "model.features.3" not in layers
    keys = Rp.key_layers({"layers": layers, "model": "vgg16", "layer": "model.features.3"})
    assert keys == {"first_pool": "model.features.4", "last": layers[-1]}


def test_the_layer_sweep_holds_the_main_layer(paper):
    """Found the same way: the layers chapter compares every layer with the main one, which VGG16's list of
    conv/pool layers leaves out (``layer_equivalence`` raised); the sweep puts it in forward order. CI scale's
    sweep is its conv/pool layers, unchanged; the smoke run keeps the first, the main and the last layer."""
    from dance_book import zoo
    from dance_book.experiments import layers as Ly

    paper("plain")
    convpool, main = zoo.layers("vgg16"), E.PAPER.layer("vgg16")
    full = Ly.sweep_layers(E.PAPER)
    assert full == convpool[:2] + [main] + convpool[2:]  # features.0, features.2, then the ReLU features.3
    assert Ly.sweep_layers(PAPER_SMOKE) == [convpool[0], main, convpool[-1]]
    assert Ly.sweep_layers(E.CI) == zoo.layers(E.CI.main_model)


def test_the_representation_study_measures_at_the_decoy_layer():
    """Found the same way: the representation chapter reads its rows at the decoy layer, which VGG16's list of
    conv/pool and linear layers left out (KeyError ('model.features.3', 'decoy'))."""
    import torchvision

    from dance_book.experiments import representation as Rp

    with torch.device("meta"):
        model = torchvision.models.vgg16()
    assert "features.3" not in Rp.measured_layers(model)
    layers = Rp.measured_layers(model, include=["features.3"])
    assert layers[:4] == ["features.0", "features.2", "features.3", "features.4"]
    assert layers == sorted(layers, key=[n for n, _ in model.named_modules()].index)
    assert Rp.measured_layers(model, include=["features.2"]) == Rp.measured_layers(model)


def test_toy_chapters_take_ci_sizes_in_the_smoke_run(monkeypatch):
    """The theory and Yeh chapters' sizes (dance_book.scale.per_scale): their code is the same at both scales."""
    from dance_book.scale import per_scale

    monkeypatch.setenv("DANCE_SCALE", "paper")
    monkeypatch.delenv("DANCE_PAPER_SMOKE", raising=False)
    assert per_scale(ci=12, paper=60) == 60
    monkeypatch.setenv("DANCE_PAPER_SMOKE", "1")
    assert per_scale(ci=12, paper=60) == 12
    monkeypatch.setenv("DANCE_SCALE", "ci")
    assert per_scale(ci=12, paper=60) == 12


def test_the_smoke_run_shortens_every_sweep_to_its_ends(monkeypatch):
    """Settings.sweep, the one place where the smoke run shortens a sweep: paper and CI scale keep every value."""
    from dance_book.experiments import attacks as R
    from dance_book.experiments import hyperparameters as H

    values = [3, 1, 4, 1.5, 9]
    for s in (E.CI, E.PAPER):
        assert s.sweep(values, keep=[4]) == values and s.sweep(values) is not values
    assert PAPER_SMOKE.sweep(values, keep=[4]) == [3, 4, 9] and values == [3, 1, 4, 1.5, 9]
    assert PAPER_SMOKE.sweep([7]) == [7]
    assert H.sweep_c_values(E.CI) == H.sweep_c_values(E.PAPER) == H.C_VALUES
    assert H.sweep_c_values(PAPER_SMOKE) == (H.C_VALUES[0], PAPER_SMOKE.decoys.c, H.C_VALUES[-1])
    assert PAPER_SMOKE.sweep(R.K_SHARES, keep=[R.K_SHARES[-1]]) == [R.K_SHARES[0], R.K_SHARES[-1]]


def test_scores_without_boxes_report_mass_as_not_available(paper):
    """The crash of issue #16: the scores read ``data.masks`` of an image folder without boxes."""
    s = paper("plain")
    assert E.load_images(s, 2).masks is None
    r = scores(s, s.main_model, s.layer(s.main_model), "gradient", "decoys", 2)
    assert r["mass_note"] == E.MASKS_MISSING
    assert torch.isnan(r["mass"]["range"]).all()
    assert torch.isfinite(r["sf"]["range"]).all()
    assert math.isnan(E.object_share(s, 2))


def test_scores_and_localization_with_boxes(paper):
    s = paper("boxes")
    r = scores(s, s.main_model, s.layer(s.main_model), "gradient", "none", 2)
    assert r["mass_note"] is None and torch.isfinite(r["mass"]["none"]).all()
    run = Lc.localization_run(s)
    assert run["unavailable"] is None
    assert np.isfinite(run["iou"]["paper"]["decoys"]["value"]).all()
    assert 0 < E.object_share(s, 2) < 1


def test_localization_without_boxes_reports_not_available(paper):
    s = paper("plain")
    run = Lc.localization_run(s)
    assert run["unavailable"] == E.MASKS_MISSING
    table = Lc.accuracy_table(run)
    measures = table.drop(columns=[c for c in table if c.startswith("box area") or c == "maps per image"])
    assert measures.isna().all().all()
    claims = Lc.claims(s)
    assert all(c.supports is None and E.MASKS_MISSING in c.note for c in claims)


def test_cache_key_follows_image_set_weights_and_versions(paper, folders):
    paper("plain")
    plain = cache.entry_key("x", {"a": 1})
    identity = cache.inputs_identity()
    assert set(identity["versions"]) == {"torch", "torchvision", "captum"}
    assert identity["weights"] == "random"
    paper("boxes")
    assert cache.entry_key("x", {"a": 1}) != plain  # another folder (and boxes): another result
    assert imagenet.image_set_digest(folders["plain"]) != imagenet.image_set_digest(folders["boxes"])


if __name__ == "__main__":
    out = Path(sys.argv[1])
    write_fake_imagenet(out / "images")
    write_fake_imagenet(out / "plain", boxes=False)
    print(out / "images", out / "plain")
