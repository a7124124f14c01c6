"""tools/paper_smoke.py, the paper-scale smoke run of `make test`: which chapters it runs, and that a cell
which raises -- the crash of issue #16 above all, ``.masks`` of an image folder without boxes -- fails it,
naming the chapter and the cell."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("jupytext")
pytest.importorskip("IPython")


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("paper_smoke", ROOT / "tools" / "paper_smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCALE = re.compile(r"settings\(|current_scale|DANCE_SCALE")


#: What a CI_SIZED chapter may not do: read the settings or the environment (only ``per_scale`` sizes).
SETTINGS = re.compile(r"settings\(|DANCE_SCALE|smoke_enabled")


def test_every_chapter_that_reads_the_scale_is_smoke_tested(smoke):
    names = smoke.chapter_names(ROOT)
    for name in names:
        code = "\n".join(smoke.code_cells(ROOT / "book" / f"{name}.md"))
        if name in smoke.SCALE_FREE:  # skipped: the same code at both scales, executed by make notebooks
            assert not SCALE.search(code), f"{name} reads the scale now: remove it from SCALE_FREE"
        elif name in smoke.CI_SIZED:  # skipped: under the smoke switch, CI's sizes, so make notebooks' run
            assert "per_scale(" in code and not SETTINGS.search(code), \
                f"{name} reads the scale other than through per_scale now: remove it from CI_SIZED"
        else:
            assert name in smoke.COSTLIEST_FIRST, f"{name}: add it to COSTLIEST_FIRST (by its measured cost)"
    assert set(smoke.BOX_CHAPTERS) <= set(names)


def test_make_test_smoke_runs_every_chapter_that_reads_the_scale(smoke):
    """``make test`` runs ``make paper-smoke``, which runs the default chapters: every chapter but those whose code
    never reads the scale (:data:`SCALE_FREE`) or would repeat make notebooks' run (:data:`CI_SIZED`)."""
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\bpaper-smoke\b", make, re.M), "make test no longer runs the paper smoke"
    recipe = re.search(r"^paper-smoke:.*\n((?:\t.*\n)+)", make, re.M).group(1)
    assert "tools/paper_smoke.py" in recipe and "--chapters" not in recipe and "--all" not in recipe
    reading = [n for n in smoke.chapter_names(ROOT) if SCALE.search("\n".join(smoke.code_cells(ROOT / "book" / f"{n}.md")))]
    chosen = set(smoke.default_chapters(ROOT))
    assert chosen == set(smoke.chapter_names(ROOT)) - set(smoke.SCALE_FREE) - set(smoke.CI_SIZED)
    assert set(reading) - set(smoke.CI_SIZED) <= chosen
    assert set(smoke.default_chapters(ROOT, everything=True)) == set(smoke.chapter_names(ROOT))
    assert set(smoke.CI_SIZED) <= set(reading)


CHAPTER = """---
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
from myst_nb import glue
glue("x", 1)
display("shown")
```

```{{code-cell}} ipython3
{code}
```
"""


def _run(tmp_path, chapters: dict, *variants):
    book = tmp_path / "book"
    book.mkdir()
    for name, code in chapters.items():
        (book / f"{name}.md").write_text(CHAPTER.format(title=name, code=code))
    cmd = [sys.executable, str(ROOT / "tools" / "paper_smoke.py"), "--book", str(book), "--data", str(tmp_path / "data"),
           "--jobs", "1", "--chapters", *chapters, "--variants", *variants]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_a_cell_that_raises_fails_the_run_naming_chapter_and_cell(tmp_path):
    job = _run(tmp_path, {"good": "import os; assert os.path.basename(os.getcwd()) == 'book'",
                          "bad": "raise RuntimeError('broken on purpose')"}, "plain")
    assert job.returncode == 1, job.stdout[-3000:] + job.stderr[-3000:]
    assert "ok     good (plain)" in job.stdout
    assert "FAILED bad (plain), code cell 2" in job.stdout and "broken on purpose" in job.stdout


def test_the_masks_of_a_folder_without_boxes_crash_the_smoke_run(tmp_path):
    """The crash of issue #16: code that reads ``.masks`` unconditionally runs on the folder with boxes and
    fails on the one without (the smoke run's settings: paper scale, test-only switches). One run on both
    folders, as ``make paper-smoke`` runs a box chapter: the failure on one folder fails the run."""
    code = ("import dance_book.experiments as E\n"
            "S = E.settings(); assert S.scale == 'paper'\nE.load_images(S, 2).masks.float()")
    job = _run(tmp_path, {"localization": code}, "plain", "boxes")
    assert job.returncode == 1, job.stdout[-3000:] + job.stderr[-3000:]
    assert "ok     localization (boxes)" in job.stdout
    assert "FAILED localization (plain), code cell 2" in job.stdout and "NoneType" in job.stdout


def test_the_claims_chapter_runs_after_every_other_chapter(tmp_path, smoke):
    """The chapters of :data:`LAST` read the others' results from the shared cache: they start only once every
    other chapter finished (by cost alone, claims would run before yeh, see COSTLIEST_FIRST)."""
    assert "claims" in smoke.LAST and set(smoke.LAST) <= set(smoke.COSTLIEST_FIRST)
    assert smoke.COSTLIEST_FIRST.index("claims") < smoke.COSTLIEST_FIRST.index("yeh")
    mark = tmp_path / "yeh-ran"
    job = _run(tmp_path, {"yeh": f"open({str(mark)!r}, 'w').close()",
                          "claims": f"import os; assert os.path.exists({str(mark)!r}), 'claims ran first'"}, "plain")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert job.stdout.index("ok     yeh (plain)") < job.stdout.index("ok     claims (plain)")
