"""The results store: entries written by make results, read by the chapters, rechecked by CI."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from dance_book.experiments import cache, store


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCE_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("DANCE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DANCE_RESULTS_CHECK", raising=False)
    monkeypatch.setenv("DANCE_RESULTS_REPORT", str(tmp_path / "report.jsonl"))
    monkeypatch.setenv("DANCE_CHAPTER", "chapter-a")
    monkeypatch.setattr(store, "_rechecked", set())
    return tmp_path


def _write(monkeypatch, name, config, value):
    monkeypatch.setenv("DANCE_RESULTS", "write")
    out = cache.cached(name, config, lambda: value)
    monkeypatch.setenv("DANCE_RESULTS", "read")
    return out


def _publish(tmp_path):
    (tmp_path / "results" / "ci.new").rename(tmp_path / "results" / "ci")


def test_write_then_read_without_computing(results, monkeypatch):
    value = {"ss": np.arange(3.0), "t": torch.ones(2)}
    _write(monkeypatch, "attack-run", {"n": 3}, value)
    _publish(results)
    entry, = store.index()
    assert entry["name"] == "attack-run" and entry["chapter"] == "chapter-a" and entry["top_level"]
    assert {"code_version", "inputs", "machine", "date", "wall_seconds"} <= set(entry)

    def boom():
        raise AssertionError("a stored result must not be computed")

    got = cache.cached("attack-run", {"n": 3}, boom)
    np.testing.assert_array_equal(got["ss"], value["ss"])
    # Another configuration is not in the store: computed.
    assert cache.cached("attack-run", {"n": 4}, lambda: 7) == 7


def test_decoys_stay_out_of_the_store(results, monkeypatch):
    _write(monkeypatch, "decoys", {"n": 1}, [1, 2])
    assert not list((results / "results").rglob("*.pt"))


def test_key_does_not_depend_on_the_code_version(results, monkeypatch):
    key = store.entry_key("x", {"a": 1})
    monkeypatch.setattr(cache, "code_version", lambda: "something else")
    assert store.entry_key("x", {"a": 1}) == key
    assert store.entry_key("x", {"a": 2}) != key


def test_recheck_matches_and_mismatches(results, monkeypatch):
    _write(monkeypatch, "fidelity-scores", {"n": 1}, {"s": np.array([1.0, 2.0])})
    _publish(results)
    key = store.index()[0]["key"]
    keys = results / "keys.json"
    keys.write_text(json.dumps([key]))
    monkeypatch.setenv("DANCE_RESULTS_CHECK", str(keys))
    # Within float tolerance: the stored value is returned and the check is reported as matched.
    got = cache.cached("fidelity-scores", {"n": 1}, lambda: {"s": np.array([1.0, 2.0 + 1e-9])})
    assert got["s"][1] == 2.0
    report = store.read_report(results / "report.jsonl")
    assert [r["matched"] for r in report] == [True]
    # Once per process: asked again, the entry is read, not recomputed.
    assert cache.cached("fidelity-scores", {"n": 1}, lambda: {"s": np.array([1.0, 2.5])})["s"][1] == 2.0
    # Another chapter reading the entry (the claims chapter) does not recheck it.
    monkeypatch.setattr(store, "_rechecked", set())
    monkeypatch.setenv("DANCE_CHAPTER", "claims")
    assert cache.cached("fidelity-scores", {"n": 1}, lambda: {"s": np.array([1.0, 2.5])})["s"][1] == 2.0
    # A recomputation that moved, in the chapter that owns the entry: the run fails, naming the entry and the fix.
    monkeypatch.setenv("DANCE_CHAPTER", "chapter-a")
    monkeypatch.setattr(store, "_rechecked", set())
    with pytest.raises(store.StoreMismatch, match="make results"):
        cache.cached("fidelity-scores", {"n": 1}, lambda: {"s": np.array([1.0, 2.5])})
    report = store.read_report(results / "report.jsonl")
    assert [r["matched"] for r in report] == [True, False]
    assert report[1]["key"] == key and "differ" in report[1]["differences"][0]


def test_nested_results_are_not_picked(results, monkeypatch):
    def outer():
        return cache.cached("inner", {"i": 1}, lambda: 1) + 1

    monkeypatch.setenv("DANCE_RESULTS", "write")
    cache.cached("outer", {"o": 2}, outer)
    _publish(results)
    flags = {e["name"]: e["top_level"] for e in store.index()}
    assert flags == {"outer": True, "inner": False}
    picked = store.pick_checks(store.index(), budget_seconds=1e9)
    assert {e["name"] for e in picked} == {"outer"}


def test_pick_checks_budget_and_per_chapter_cap():
    entries = [{"key": f"{c}{i}", "chapter": c, "top_level": True, "wall_seconds": 10.0}
               for c in "abc" for i in range(5)]
    picked = store.pick_checks(entries, budget_seconds=45, per_chapter=3, rng=random.Random(0))
    assert len(picked) == 4 and sum(e["wall_seconds"] for e in picked) <= 45
    assert {e["chapter"] for e in picked} == {"a", "b", "c"}  # chapters take turns
    capped = store.pick_checks(entries, budget_seconds=1e9, per_chapter=2, rng=random.Random(0))
    assert len(capped) == 6
    # Chosen afresh: different seeds, different picks.
    picks = {tuple(e["key"] for e in store.pick_checks(entries, 30, rng=random.Random(s))) for s in range(10)}
    assert len(picks) > 1


def test_recheck_cost_counts_the_cached_inputs_it_reused(results, monkeypatch):
    """An entry whose decoys came from the cache records what they cost, so that CI's recheck budget (which
    starts from an empty cache) is not spent on an entry whose wall time only looked cheap."""
    import time

    now = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])

    def spend(seconds, value=1):
        now[0] += seconds
        return value

    def result(own_seconds):
        return spend(own_seconds, cache.cached("decoys", {"d": 1}, lambda: spend(30.0)))

    monkeypatch.setenv("DANCE_RESULTS", "write")
    cache.cached("first", {}, lambda: result(70.0))  # computes the decoys: 30 s of its 100 s
    cache.cached("second", {}, lambda: result(2.0))  # takes them from the cache
    _publish(results)
    entries = {e["name"]: e for e in store.index()}
    assert entries["first"]["wall_seconds"] == 100.0 and entries["first"]["scratch_seconds"] == 100.0
    assert entries["second"]["wall_seconds"] == 2.0 and entries["second"]["scratch_seconds"] == 32.0
    assert store.recheck_seconds(entries["second"]) == 32.0
    assert store.recheck_seconds({"wall_seconds": 5.0}) == 5.0  # made before the field existed
    picked = store.pick_checks(list(entries.values()), budget_seconds=20)
    assert picked == []  # "second" fits by wall time (2 s) but not by its recheck cost (32 s)


def test_differences_tolerance_and_structure():
    assert store.differences({"a": [1.0, np.ones(3)]}, {"a": [1.0, np.ones(3) * (1 + 1e-7)]}) == []
    assert store.differences({"a": 1.0}, {"a": 1.1})
    assert store.differences({"a": 1}, {"b": 1})
    assert store.differences(np.ones(3), np.ones(4))
    assert store.differences("x", "y")
    assert store.differences(np.array([True, False]), np.array([True, True]))
    assert store.differences(torch.tensor([np.nan]), np.array([np.nan])) == []
    # Timings of the run belong to the machine and the moment: never compared.
    assert store.differences({"sf": 1.0, "seconds": 3.0}, {"sf": 1.0, "seconds": 4.5}) == []
    assert store.differences({"sf": 1.0, "seconds": 3.0}, {"sf": 1.5, "seconds": 3.0})


def test_bad_mode(monkeypatch):
    monkeypatch.setenv("DANCE_RESULTS", "sometimes")
    with pytest.raises(ValueError, match="DANCE_RESULTS"):
        store.mode()


def test_every_committed_entry_names_the_chapter_that_asked_for_it():
    # The provenance says which chapter asked for each result, and the recheck runs it in that chapter: an entry
    # written by a script outside a chapter run (DANCE_CHAPTER unset) has no owner: write it by running its chapter.
    root = store._ROOT
    chapters = {p.stem for p in (root / "book").glob("*.md")}
    for folder in sorted(p for p in (root / "results").iterdir() if p.is_dir() and not p.name.endswith(".new")):
        entries = [e for e in store.index_of(folder) if e.get("top_level")]
        assert entries, f"no entries in {folder}"
        orphans = [e["key"] for e in entries if e.get("chapter") not in chapters]
        assert not orphans, f"{len(orphans)} entries of {folder.name} name no chapter of book/: {orphans[:3]}"
