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
