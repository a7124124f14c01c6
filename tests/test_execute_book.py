"""tools/execute_book.py: which chapters it executes, and when `make book` may reuse `make test`'s executions."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("jupyter_cache")


@pytest.fixture(scope="module")
def xb():
    spec = importlib.util.spec_from_file_location("execute_book", ROOT / "tools" / "execute_book.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("execute_book", module)
    spec.loader.exec_module(module)
    return module


NOTEBOOK = """---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
# {title}

```{{code-cell}} ipython3
x = {value}
```
"""


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n- file: book/fidelity\n- file: book/notes\n")
    (tmp_path / "book" / "intro.md").write_text(NOTEBOOK.format(title="Intro", value=1))
    (tmp_path / "book" / "fidelity.md").write_text(NOTEBOOK.format(title="Fidelity", value=2))
    (tmp_path / "book" / "notes.md").write_text("# Notes\n\nplain markdown, not a notebook\n")
    (tmp_path / "book" / "orphan.md").write_text(NOTEBOOK.format(title="Orphan", value=3))
    (tmp_path / "code.py").write_text("A = 1\n")
    return tmp_path


def test_every_notebook_is_executed_longest_first_orphans_included(xb, project):
    names = [p.stem for p in xb.chapters(project)]
    assert names == ["fidelity", "intro", "orphan"]  # fidelity is among LONGEST_FIRST; notes is no notebook


def test_reuse_only_while_cells_and_sources_are_unchanged(xb, project):
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from jupyter_cache.readers import get_reader

    cache_dir = project / "_build" / ".jupyter_cache"
    cache = get_cache(cache_dir)
    paths = xb.chapters(project)
    for p in paths:  # as if executed (outputs do not matter to the match)
        nb = get_reader(xb.READER)(str(p))
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(p)), check_validity=False, overwrite=True)
    assert xb.still_current(cache, paths, cache_dir, project) == set()  # no stamp yet: nothing is reused

    xb.write_source_stamp(cache_dir, project)
    assert xb.still_current(cache, paths, cache_dir, project) == set(paths)

    # A chapter's code changes: that chapter only runs again.
    (project / "book" / "intro.md").write_text(NOTEBOOK.format(title="Intro", value=10))
    assert xb.still_current(cache, paths, cache_dir, project) == set(paths) - {project / "book" / "intro.md"}
    # Its prose changes: still current (the build re-renders the text, the outputs stay valid).
    text = (project / "book" / "fidelity.md").read_text().replace("# Fidelity", "# Fidelity, reworded")
    (project / "book" / "fidelity.md").write_text(text)
    assert project / "book" / "fidelity.md" in xb.still_current(cache, paths, cache_dir, project)
    # The code outside book/ changes: nothing is reused.
    (project / "code.py").write_text("A = 2\n")
    assert xb.still_current(cache, paths, cache_dir, project) == set()


# --- make results sharded over torchrun's ranks -----------------------------------------------------

CHAPTERS = ["attacks", "layers", "adaptive", "fidelity", "architectures", "hyperparameters", "sanity", "control",
            "localization", "representation", "benchmark", "theory", "yeh"]


@pytest.mark.parametrize("world", [1, 2, 3, 5, 13, 20])
def test_share_gives_every_chapter_to_exactly_one_rank(xb, world):
    costs = xb.recorded_costs(ROOT, "ci")
    shares = xb.share(CHAPTERS, costs, world)
    assert len(shares) == world
    assert sorted(c for s in shares for c in s) == sorted(CHAPTERS)
    assert xb.share(CHAPTERS, costs, world) == shares  # deterministic: every rank computes the same
    counts = [len(s) for s in shares]
    if world <= len(CHAPTERS):
        assert min(counts) >= 1  # no rank idles while another has several chapters
    else:
        assert max(counts) == 1


def test_share_balances_the_recorded_cost(xb):
    costs = {"a": 100.0, "b": 60.0, "c": 50.0, "d": 10.0, "e": 0.0, "f": 0.0}
    shares = xb.share(list("abcdef"), costs, 2)
    assert shares == [["a", "d", "e"], ["b", "c", "f"]]  # 110 s and 110 s
    # No recorded costs (a first run at a new scale): the given order, dealt round-robin.
    assert xb.share(list("abcde"), {}, 2) == [["a", "c", "e"], ["b", "d"]]
    # The book's own store: the two costliest chapters go to different ranks, and the loads stay within
    # the largest single chapter of each other (the bound of the greedy rule).
    costs = xb.recorded_costs(ROOT, "ci")
    if len(costs) >= 2:
        shares = xb.share(CHAPTERS, costs, 2)
        top2 = sorted(costs, key=costs.get)[-2:]
        assert {r for r, s in enumerate(shares) for c in s if c in top2} == {0, 1}
        loads = [sum(costs.get(c, 0.0) for c in s) for s in shares]
        assert abs(loads[0] - loads[1]) <= max(costs.values())


def test_share_rejects_bad_input(xb):
    with pytest.raises(ValueError, match="world"):
        xb.share(["a"], {}, 0)
    with pytest.raises(ValueError, match="names"):
        xb.share(["a", "a"], {}, 2)


FAKE_RUN = '''
import importlib.util, os, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("execute_book", {tool!r})
xb = importlib.util.module_from_spec(spec); spec.loader.exec_module(xb)
out = Path({out!r})
rank, world = xb.distributed()

def execute(names):
    for n in names:
        (out / f"{{n}}.rank{{rank}}").write_text("done")
    return 1 if "boom" in names else 0

def finish():
    (out / "swapped").write_text(str(rank))
    return 0

names = {names!r}
status = xb.sharded([n for n in names if n != "claims"], ["claims"], execute, finish, rank, world)
import torch.distributed as dist
dist.destroy_process_group()
sys.exit(status)
'''


def _fake_run(tmp_path, names, ranks=2):
    import os
    import subprocess

    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN.format(tool=str(ROOT / "tools" / "execute_book.py"), out=str(out), names=names))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                          str(script)], env=env, capture_output=True, text=True, timeout=300)
    return job, out


def test_two_ranks_share_the_chapters_and_rank_0_swaps_only_after_all_succeeded(tmp_path):
    job, out = _fake_run(tmp_path, ["attacks", "layers", "fidelity", "sanity", "claims"])
    assert job.returncode == 0, job.stderr[-3000:]
    done = sorted(p.name for p in out.glob("*.rank*"))
    assert sorted(n.split(".")[0] for n in done) == ["attacks", "claims", "fidelity", "layers", "sanity"]
    assert "claims.rank0" in done  # the chapters of RUN_LAST: rank 0, after the others
    assert {n.split(".rank")[1] for n in done} == {"0", "1"}  # both ranks worked
    assert (out / "swapped").read_text() == "0"


def test_a_failing_rank_fails_the_run_and_nothing_is_swapped(tmp_path):
    job, out = _fake_run(tmp_path, ["attacks", "boom", "fidelity", "sanity", "claims"])
    assert job.returncode != 0
    assert (out / "boom.rank1").exists()  # round-robin without recorded costs: boom is rank 1's
    assert (out / "fidelity.rank0").exists()  # rank 0 finished its share, then learnt of the failure
    assert not (out / "claims.rank0").exists() and not (out / "swapped").exists()
