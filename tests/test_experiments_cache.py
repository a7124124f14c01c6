"""The experiments' disk cache: keyed by name, configuration and code; computed once across processes."""
import multiprocessing as mp
import os
import time

import pytest

from dance_book.experiments import cache


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DANCE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DANCE_CACHE", raising=False)
    return tmp_path


def test_computes_once_and_keys_by_config(cache_dir):
    calls = []

    def compute(v):
        calls.append(v)
        return {"v": v}

    assert cache.cached("x", {"a": 1}, lambda: compute(1)) == {"v": 1}
    assert cache.cached("x", {"a": 1}, lambda: compute(99)) == {"v": 1}  # from disk
    assert cache.cached("x", {"a": 2}, lambda: compute(2)) == {"v": 2}  # another config
    assert calls == [1, 2]
    assert not list(cache_dir.glob("*.tmp"))


def test_off_switch_and_truncated_files(cache_dir, monkeypatch):
    assert cache.cached("y", 0, lambda: 1) == 1
    (path,) = cache_dir.glob("y-*.pt")
    path.write_bytes(b"not a torch file")  # an interrupted write
    assert cache.cached("y", 0, lambda: 2) == 2
    monkeypatch.setenv("DANCE_CACHE", "off")
    assert cache.cached("y", 0, lambda: 3) == 3


def _slow_compute(log, value):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    return value


def _worker(directory, log, out):
    os.environ["DANCE_CACHE_DIR"] = directory
    result = cache.cached("shared", {"k": 1}, lambda: _slow_compute(log, 42))
    with open(out, "a") as f:
        f.write(f"{result}\n")


@pytest.mark.skipif(os.name != "posix", reason="the lock is POSIX-only (fcntl)")
def test_processes_side_by_side_compute_once(cache_dir, tmp_path):
    log, out = tmp_path / "computed.txt", tmp_path / "results.txt"
    # fork: the children start with this process's imports (spawn would import torch and the book anew in each, about
    # 5 CPU seconds apiece); they are still two processes, each opening the cache's lock file itself
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(cache_dir), str(log), str(out))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1  # the second process waited and loaded the result
    assert out.read_text().split() == ["42", "42"]
