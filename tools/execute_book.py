"""Execute the book's chapters in parallel into the jupyter-cache that `jupyter-book build` reads.

`make test` (its notebook stage) runs this on an emptied cache: every chapter executes, on the code
as it is now, and any cell that raises fails the stage. `make book` runs it with ``--reuse`` and then
`jupyter-book build` with ``execute_notebooks: cache``: a chapter whose executed copy is already in
the cache (matched on the code of its cells) and whose project sources outside ``book/`` are
unchanged since (the source stamp) is not executed again, so `make book` after `make test` only
builds. The build finds every chapter's outputs in the cache and executes nothing itself. Heavy
results come from the experiments' own cache (``_build/.dance-cache``, keyed by settings and a hash
of the sources) in both cases.

    python tools/execute_book.py [--jobs 2] [--timeout 1800] [--cache _build/.jupyter_cache] [--reuse]
    python tools/execute_book.py --chapter claims   # one chapter alone, into _build/chapters/claims.ipynb

Chapters run on ``--jobs`` worker processes, the longest first so that the workers finish together;
a chapter's cells run in order in one kernel, in the chapter's folder (as myst-nb would run them).
Exit status 1 if any chapter raises.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "_ext"))
from dance_site import write_source_stamp  # noqa: E402  (the stamp that the build checks)

READER = {"name": "myst_nb_md", "type": "plugin"}  # myst-nb's own reader: the cache key matches the build's
LONGEST_FIRST = ("attacks", "layers", "fidelity")  # as in the Makefile's notebook tests


def config_timeout(root: Path = ROOT, default: int = 1800) -> int:
    """execute.timeout of _config.yml, the limit the build itself would give each cell."""
    m = re.search(r"^execute:\n(?:[ \t]+.*\n)*?[ \t]+timeout:\s*(\d+)", (root / "_config.yml").read_text(), re.M)
    return int(m.group(1)) if m else default


def _is_notebook(path: Path) -> bool:
    return path.is_file() and "\nkernelspec:" in path.read_text(encoding="utf8")[:2000]


def chapters(root: Path = ROOT) -> list[Path]:
    """The toc's files that are notebooks, the longest first, then in toc order, then any notebook
    of ``book/`` missing from the toc (it is executed, and so tested, too)."""
    toc = (root / "_toc.yml").read_text(encoding="utf8")
    files = [root / f"{name}.md" for name in re.findall(r"(?:file|root):\s*(\S+)", toc)]
    notebooks = [f for f in files if _is_notebook(f)]
    notebooks += [f for f in sorted((root / "book").glob("*.md")) if f not in files and _is_notebook(f)]
    first = [f for n in LONGEST_FIRST for f in notebooks if f.stem == n]
    return first + [f for f in notebooks if f not in first]


def still_current(cache, paths: list[Path], cache_dir: Path, root: Path = ROOT) -> set[Path]:
    """The chapters whose executed copy in ``cache`` is current: same cell code, and the project's
    sources outside ``book/`` unchanged since the cache was filled (the stamp)."""
    from dance_site import STAMP, source_stamp
    from jupyter_cache.readers import get_reader

    stamp = cache_dir / STAMP
    if not stamp.is_file() or stamp.read_text().strip() != source_stamp(root):
        return set()
    current = set()
    for p in paths:
        try:
            cache.match_cache_notebook(get_reader(READER)(str(p)))
        except KeyError:  # no cached record with this code
            continue
        current.add(p)
    return current


def _execute(path: str, timeout: int) -> tuple[str, str | None, float, str | None]:
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution
    from jupyter_cache.readers import get_reader

    nb = get_reader(READER)(path)
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False,
                                 meta_override=True)
    if result.err is not None:
        return path, None, result.time, result.exc_string
    return path, nbformat.writes(nb), result.time, None


def run_chapter(name: str, timeout: int) -> int:
    source = ROOT / "book" / f"{Path(name).stem}.md"
    if not source.is_file():
        print(f"no chapter {source.relative_to(ROOT)}; chapters: {', '.join(p.stem for p in chapters())}")
        return 2
    out = ROOT / "_build" / "chapters" / f"{source.stem}.ipynb"
    print(f"executing {source.relative_to(ROOT)} ...", flush=True)
    _, text, seconds, error = _execute(str(source), timeout)
    if error is not None:
        print(f"FAILED after {seconds:.0f} s\n{error}")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf8")
    print(f"executed in {seconds:.0f} s: {out.relative_to(ROOT)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=config_timeout(),
                        help="seconds per cell (default: execute.timeout of _config.yml)")
    parser.add_argument("--cache", type=Path, default=ROOT / "_build" / ".jupyter_cache")
    parser.add_argument("--chapter", help="execute this chapter alone (book/NAME.md) into _build/chapters/NAME.ipynb")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the chapters already executed on the same code (make book after make test)")
    args = parser.parse_args(argv)
    if args.chapter:
        return run_chapter(args.chapter, args.timeout)

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    paths = chapters()
    current = set()
    if args.reuse and args.cache.is_dir():
        current = still_current(get_cache(args.cache), paths, args.cache)
    if not current:
        shutil.rmtree(args.cache, ignore_errors=True)  # execute every chapter, on the code as it is
    cache = get_cache(args.cache)
    for p in paths:
        cache.add_nb_to_project(str(p), read_data=READER)
    if current:
        print(f"{len(current)}/{len(paths)} chapters already executed on this code (kept): "
              f"{', '.join(p.stem for p in paths if p in current)}", flush=True)
    paths = [p for p in paths if p not in current]
    start = time.perf_counter()
    print(f"executing {len(paths)} chapters on {args.jobs} worker(s), longest first", flush=True)
    failed = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_execute, str(p), args.timeout) for p in paths]
        for fut in as_completed(futures):
            path, text, seconds, error = fut.result()
            name = Path(path).relative_to(ROOT)
            if error is not None:
                failed.append(name)
                print(f"FAILED {name} after {seconds:.0f} s\n{error}", flush=True)
                continue
            cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(text, nbformat.NO_CONVERT), path,
                                                      data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            print(f"executed {name} in {seconds:.0f} s", flush=True)
    print(f"executed {len(paths) - len(failed)}/{len(paths)} chapters in {time.perf_counter() - start:.0f} s",
          flush=True)
    for name in failed:
        print(f"FAILED {name}", flush=True)
    if failed:
        return 1
    write_source_stamp(args.cache, ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
