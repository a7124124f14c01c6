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

``--results`` (`make results`) can be sharded over processes and machines with torchrun:

    torchrun --standalone --nproc-per-node 2 tools/execute_book.py --results --jobs 1

Each rank executes its share of the chapters (:func:`share`: the chapters that recorded the most
compute in the committed store first, each to the least loaded rank), all writing into the same
``results/<scale>.new/``; then the ranks meet (a ``torch.distributed`` barrier over gloo) and, only if
every rank succeeded, rank 0 executes the chapters of ``RUN_LAST`` and swaps the new store in. A
failing rank fails the whole run and leaves ``.new`` for a rerun to resume. Without torchrun's
environment (``WORLD_SIZE``) it runs as one process, as before.
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
#: The chapters that took longest in CI's notebook stage (2026-11-28: 45-80 s each; the others 20-45 s, most
#: of their heavy results read from the store), started first so that both workers finish together.
LONGEST_FIRST = ("theory", "quickstart", "benchmark", "performance", "layers", "hyperparameters", "measures", "fidelity")
#: Executed after all others: the claims chapter reports the results store's rechecks of this run.
RUN_LAST = ("claims",)
CHECK_KEYS = ROOT / "_build" / "results-check-keys.json"
CHECK_REPORT = ROOT / "_build" / "results-check.jsonl"


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


def recorded_costs(root: Path = ROOT, scale: str | None = None) -> dict[str, float]:
    """Seconds of compute that the committed results store of ``scale`` (default: ``DANCE_SCALE``) recorded
    for each chapter: the summed wall time of the entries that the chapter asked for itself (a nested
    entry's time is inside its parent's). Empty when there is no store yet."""
    import json
    import os

    scale = scale or os.environ.get("DANCE_SCALE", "ci").strip().lower() or "ci"
    folder = Path(os.environ.get("DANCE_RESULTS_DIR") or root / "results") / scale
    costs: dict[str, float] = {}
    for meta in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        entry = json.loads(meta.read_text(encoding="utf8"))
        if entry.get("top_level") and entry.get("chapter"):
            costs[entry["chapter"]] = costs.get(entry["chapter"], 0.0) + float(entry.get("wall_seconds") or 0.0)
    return costs


def share(names: list[str], costs: dict[str, float], world: int) -> list[list[str]]:
    """Deal the chapters ``names`` to ``world`` ranks; returns each rank's chapters, in execution order.

    The rule (longest processing time first): the chapters in decreasing recorded cost (``costs``,
    seconds; a chapter without one counts 0; ties keep the order of ``names``), each given to the rank
    with the least recorded seconds so far, then the fewest chapters, then the lowest number. With no
    recorded costs that is ``names`` dealt round-robin. Every rank computes the same shares from the same
    committed store, so the ranks need not talk to agree on them.
    """
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be a positive int (the number of ranks), got {world!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"names must not repeat a chapter, got {names}")
    order = sorted(range(len(names)), key=lambda i: (-costs.get(names[i], 0.0), i))
    shares: list[list[str]] = [[] for _ in range(world)]
    load = [0.0] * world
    for i in order:
        rank = min(range(world), key=lambda r: (load[r], len(shares[r]), r))
        shares[rank].append(names[i])
        load[rank] += costs.get(names[i], 0.0)
    return shares


def distributed() -> tuple[int, int]:
    """``(rank, world_size)``: joins torchrun's process group (gloo: the ranks only exchange a flag or two,
    the chapters' own computations run in their kernels) when started by torchrun, else ``(0, 1)``.
    On a node with several GPUs each rank's kernels see only the GPU of its ``LOCAL_RANK``."""
    import os
    from datetime import timedelta

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if "CUDA_VISIBLE_DEVICES" not in os.environ and torch.cuda.device_count() > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(local % torch.cuda.device_count())
    if not dist.is_initialized():
        # a rank waits at the barrier for the slowest one: hours at paper scale
        dist.init_process_group("gloo", timeout=timedelta(hours=48))
    return dist.get_rank(), dist.get_world_size()


def sharded(names: list[str], last: list[str], execute, finish, rank: int, world: int,
            costs: dict[str, float] | None = None, log=print) -> int:
    """The distributed part of a sharded run: rank ``rank`` executes its :func:`share` of ``names``
    (``execute(list_of_names) -> exit status``); every rank learns whether all succeeded; only then
    rank 0 executes ``last`` and calls ``finish() -> exit status`` (the store swap). Returns the run's
    status, the same on every rank: 0 only when every rank's share and rank 0's ending succeeded."""
    import torch
    import torch.distributed as dist

    mine = share(names, costs or {}, world)[rank]
    log(f"[rank {rank}/{world}] executing {len(mine)} chapter(s): {', '.join(mine) or '(none)'}")
    status = execute(mine) if mine else 0
    flag = torch.tensor([1 if status != 0 else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # also the barrier: every rank has finished its share
    if flag.item():
        log(f"[rank {rank}/{world}] a rank failed (this one: {'yes' if status else 'no'}); nothing swapped in")
        return 1
    if rank == 0:
        status = execute(last) if last else 0
        status = finish() if status == 0 else status
    final = torch.tensor([status])
    dist.broadcast(final, src=0)
    return int(final.item() != 0)


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

    import os

    os.environ["DANCE_CHAPTER"] = Path(path).stem  # the results store records which chapter asked for an entry
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


def choose_checks(budget_seconds: float) -> None:
    """Pick the results store's entries that this run recomputes (none for a zero budget), for the
    chapters' kernels to find (environment), and start an empty report."""
    import json
    import os
    import random

    sys.path.insert(0, str(ROOT))
    from dance_book.experiments import store

    CHECK_REPORT.parent.mkdir(parents=True, exist_ok=True)
    CHECK_REPORT.unlink(missing_ok=True)
    os.environ["DANCE_RESULTS_REPORT"] = str(CHECK_REPORT)
    seed = random.SystemRandom().randrange(2**32)  # chosen afresh each run, printed to reproduce the choice
    picked = store.pick_checks(store.index(), budget_seconds, rng=random.Random(seed)) if budget_seconds > 0 else []
    CHECK_KEYS.write_text(json.dumps([e["key"] for e in picked]))
    os.environ["DANCE_RESULTS_CHECK"] = str(CHECK_KEYS)
    if budget_seconds > 0:
        recorded = sum(store.recheck_seconds(e) for e in picked)
        print(f"results store: rechecking {len(picked)} entries (seed {seed}, {recorded:.0f} s recorded compute): "
              f"{', '.join(e['key'] for e in picked)}", flush=True)


def report_checks() -> None:
    from dance_book.experiments import store

    report = store.read_report(CHECK_REPORT)
    if report:
        matched = sum(r["matched"] for r in report)
        print(f"results store: {matched}/{len(report)} rechecked entries match their recomputation "
              f"({sum(r['seconds'] for r in report):.0f} s)", flush=True)


def make_results(args) -> int:
    """Compute the results store from nothing (or resume an interrupted run) and put it in place."""
    import os

    sys.path.insert(0, str(ROOT))
    os.environ["DANCE_RESULTS"] = "write"
    # Its own experiment cache: every entry's wall time is its computation's, and a killed run resumes.
    os.environ.setdefault("DANCE_CACHE_DIR", str(ROOT / "_build" / ".results-cache"))
    from dance_book.experiments import store

    new, final = store.store_dir(writing=True), store.store_dir(writing=False)
    kept = len(list(new.glob("*/*.json"))) if new.is_dir() else 0
    print(f"make results: writing {new.relative_to(ROOT) if new.is_relative_to(ROOT) else new} "
          f"({'resuming, ' + str(kept) + ' entries kept' if kept else 'from nothing'})", flush=True)
    start = time.perf_counter()

    def execute(names: list[str] | None, cache: Path = ROOT / "_build" / ".results-jupyter-cache") -> int:
        only = [] if names is None else ["--only", *names]
        return main(["--jobs", str(args.jobs), "--timeout", str(args.timeout), "--cache", str(cache), *only])

    def finish() -> int:
        entries = store.index_of(new)
        shutil.rmtree(final, ignore_errors=True)
        new.rename(final)
        shutil.rmtree(os.environ["DANCE_CACHE_DIR"], ignore_errors=True)
        print(f"make results: {len(entries)} entries in {final} ({time.perf_counter() - start:.0f} s); commit them",
              flush=True)
        return 0

    rank, world = distributed()
    if world == 1:
        status = execute(None)
        status = finish() if status == 0 else status
    else:
        import torch.distributed as dist

        names = [p.stem for p in chapters()]
        # each rank its own jupyter-cache (a sqlite database): the results go to the shared store folder
        status = sharded([n for n in names if n not in RUN_LAST], [n for n in names if n in RUN_LAST],
                         lambda some: execute(some, ROOT / "_build" / f".results-jupyter-cache-rank{rank}"),
                         finish, rank, world, recorded_costs(), log=lambda m: print(m, flush=True))
        dist.destroy_process_group()
    if status != 0:
        print(f"make results: stopped; the finished entries stay in {new} and a rerun resumes there", flush=True)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=config_timeout(),
                        help="seconds per cell (default: execute.timeout of _config.yml)")
    parser.add_argument("--cache", type=Path, default=ROOT / "_build" / ".jupyter_cache")
    parser.add_argument("--chapter", help="execute this chapter alone (book/NAME.md) into _build/chapters/NAME.ipynb")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the chapters already executed on the same code (make book after make test)")
    parser.add_argument("--check-store", type=float, default=0.0, metavar="SECONDS",
                        help="recompute a random sample of the results store's entries, about this many seconds of "
                             "recorded compute in all, while the chapters run; a difference fails the chapter")
    parser.add_argument("--results", action="store_true",
                        help="make results: execute every chapter computing every stored result into results/<scale>.new/, "
                             "which replaces results/<scale>/ once all chapters ran (a killed run resumes)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="execute only these chapters (book/NAME.md)")
    args = parser.parse_args(argv)
    if args.chapter:
        return run_chapter(args.chapter, args.timeout)
    if args.results:
        return make_results(args)

    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    paths = chapters()
    if args.only:
        unknown = sorted(set(args.only) - {p.stem for p in paths})
        if unknown:
            parser.error(f"--only names no chapter {', '.join(unknown)}; chapters: {', '.join(p.stem for p in paths)}")
        paths = [p for p in paths if p.stem in args.only]
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
    if paths:
        choose_checks(args.check_store)
    start = time.perf_counter()
    print(f"executing {len(paths)} chapters on {args.jobs} worker(s), longest first", flush=True)
    failed = []

    def done(path, text, seconds, error):
        name = Path(path).relative_to(ROOT)
        if error is not None:
            failed.append(name)
            print(f"FAILED {name} after {seconds:.0f} s\n{error}", flush=True)
            return
        cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(text, nbformat.NO_CONVERT), path,
                                                  data={"execution_seconds": seconds}),
                                    check_validity=False, overwrite=True)
        print(f"executed {name} in {seconds:.0f} s", flush=True)

    first = [p for p in paths if p.stem not in RUN_LAST]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_execute, str(p), args.timeout) for p in first]
        for fut in as_completed(futures):
            done(*fut.result())
    for p in paths:
        if p.stem in RUN_LAST:
            done(*_execute(str(p), args.timeout))
    if paths:
        report_checks()
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
