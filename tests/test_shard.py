"""Sharded decoy optimisation with torchrun: 2 CPU ranks give exactly the 1-rank (and in-process) result, and a
killed run resumes from its finished chunks to the same result.

Two images in chunks of one: each of the 2 ranks computes one chunk, and the killed run has two chunks, one
kept and one resumed. The process start-ups (imports of torch, captum, scipy: several CPU seconds each) cost more
than the decoys of two images, so the 1-rank reference is computed once for the module, by the runner without
torchrun (rank 0 of 1, the code path of ``torchrun --nproc-per-node=1``, which the killed run takes)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import dance_book.experiments as E
from dance_book.experiments import shard

# Two images past the shared set (offset 50), so the decoy set is small and its own cache entry.
N, OFFSET = 2, 50
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
SHARD = ["-m", "dance_book", "shard", "--model", "vgg-shapes", "--images", str(N), "--offset", str(OFFSET), "--chunk", "1"]


def _env(cache: Path) -> dict:
    env = dict(os.environ, DANCE_SCALE="ci", DANCE_CACHE_DIR=str(cache), OMP_NUM_THREADS="1")
    env.pop("DANCE_CACHE", None)
    return env


def _torchrun(cache: Path, ranks: int) -> subprocess.CompletedProcess:
    cmd = TORCHRUN + [f"--nproc-per-node={ranks}"] + SHARD
    return subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=300)


def _one_process(cache: Path) -> subprocess.CompletedProcess:
    """The runner without torchrun: one process, rank 0 of 1."""
    return subprocess.run([sys.executable] + SHARD, env=_env(cache), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The cache folder of the 1-rank run (shared by the tests of this module, which only read it)."""
    cache = tmp_path_factory.mktemp("one-rank")
    one = _one_process(cache)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "[rank 0/1] 2 chunks computed, 0 kept" in one.stdout
    return cache


def _stored(cache: Path):
    """The decoy set as the chapters read it: shared_decoys with the cache pointed at ``cache``."""
    old = os.environ.get("DANCE_CACHE_DIR")
    os.environ["DANCE_CACHE_DIR"] = str(cache)
    try:
        entries = list(cache.glob("decoys-*.pt"))
        assert len(entries) == 1, f"expected one gathered decoy set in {cache}, found {entries}"
        return torch.load(entries[0], weights_only=False)
    finally:
        if old is None:
            del os.environ["DANCE_CACHE_DIR"]
        else:
            os.environ["DANCE_CACHE_DIR"] = old


def _descendants(pid: int) -> list:
    """Process ids of every descendant of ``pid`` (Linux /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for da, db in zip(a, b):
        assert torch.equal(da.images, db.images)
        assert torch.equal(da.masks, db.masks)
        assert torch.equal(da.deviation, db.deviation)


def test_chunks_cover_every_image_once():
    every = shard.chunks(10, 3)
    assert every == [(0, 3), (3, 6), (6, 9), (9, 10)]
    ranks = [shard.assigned(every, r, 3) for r in range(3)]
    assert sorted(c for r in ranks for c in r) == every
    with pytest.raises(ValueError, match="size"):
        shard.chunks(10, 0)
    with pytest.raises(ValueError, match="rank"):
        shard.assigned(every, 3, 3)


def test_two_ranks_equal_one_rank_and_in_process(tmp_path, reference):
    two = _torchrun(tmp_path / "two", 2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "[rank 0/2] 1 chunks computed" in two.stdout and "[rank 1/2] 1 chunks computed" in two.stdout
    a, b = _stored(reference), _stored(tmp_path / "two")
    _assert_same(a, b)
    # The chapters' own unsharded computation (both images in one batch, this process's threads)
    # stores under the same key and agrees to float rounding: the batch size and thread count of the
    # convolutions change the last bits, the split over ranks does not (exact equality above).
    os.environ["DANCE_CACHE"] = "off"
    try:
        direct = E.shared_decoys(E.settings("ci"), "vgg-shapes", N, offset=OFFSET)
    finally:
        del os.environ["DANCE_CACHE"]
    assert [len(d) for d in direct] == [len(d) for d in a]
    for da, dd in zip(a, direct):
        assert torch.equal(da.masks, dd.masks)
        torch.testing.assert_close(da.images, dd.images, atol=1e-4, rtol=0)  # measured: at most 2.5e-5


def test_killed_run_resumes_with_the_same_result(reference, tmp_path):
    # the kill lands after the first of the two chunks: one kept, one resumed
    cache = tmp_path / "killed"
    job = subprocess.Popen(TORCHRUN + ["--nproc-per-node=1"] + SHARD, env=_env(cache), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(cache.glob("shards/*/images-*.pt")) and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.05)
    for pid in [job.pid] + _descendants(job.pid):  # torchrun and its worker (which has its own session)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    job.wait()
    finished = list(cache.glob("shards/*/images-*.pt"))
    assert len(finished) == 1, f"the kill should land mid-run, found {len(finished)} of {N} chunks"
    assert not list(cache.glob("decoys-*.pt"))
    before = {p: p.stat().st_mtime_ns for p in finished}

    resumed = _one_process(cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 chunks computed, 1 kept from an earlier run" in resumed.stdout
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # the finished chunk was not redone
    _assert_same(_stored(cache), _stored(reference))
