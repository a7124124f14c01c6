"""Sharded decoy optimisation over processes and machines, with ``torchrun`` (``torch.distributed``).

Optimising the decoys is the book's heaviest unit (hundreds of decoys per image at paper scale,
shared by every chapter through :func:`dance_book.experiments.shared_decoys`). This module splits
the images of one decoy set into chunks, gives chunk ``i`` to rank ``i mod world_size``, writes
each finished chunk to a file, and, once every rank is done, rank 0 concatenates the chunks in
image order into the experiments' cache under the very key :func:`shared_decoys` reads. The
chapters then find the decoys there and compute nothing.

* **Identical to one process.** Each image's decoys depend on the image and the settings only:
  the optimisation is deterministic, its rows are independent, and the seed of a mask subset is
  the settings' (not the rank's), so the split changes no number (tested with 2 ranks).
* **Resume.** Chunk files live under ``<cache dir>/shards/<cache key>/``; a rerun after a killed
  job skips the chunks already written (a truncated file is recomputed).
* **Engines.** ``torchrun`` starts the processes and the rendezvous; the backend is ``gloo`` on
  CPUs and ``nccl`` on GPUs (each rank on its ``LOCAL_RANK`` GPU). The chunk files are the results
  store, so on a cluster ``DANCE_CACHE_DIR`` must be on a shared file system.

Commands (see README, "Paper scale and sharded runs")::

    torchrun --standalone --nproc-per-node 2 -m dance_book shard --model vgg16
    torchrun --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint $HOST:29500 -m dance_book shard ...

Without ``torchrun`` it runs as one process (rank 0 of 1).
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from .cache import cache_dir, cached, entry_key
from .inputs import decoys_key, load_images, load_model
from .maps import optimised_decoys
from .settings import Settings, settings as current_settings

#: Images per chunk file: small enough that a killed job loses little, large enough to batch.
DEFAULT_CHUNK = 8
#: How long a rank waits for the others at the final barrier (ranks may finish hours apart).
BARRIER_TIMEOUT = timedelta(hours=48)


def chunks(n: int, size: int) -> List[Tuple[int, int]]:
    """Image ranges ``[lo, hi)`` of ``n`` images in chunks of ``size`` (the last may be shorter).

    Example:
        >>> chunks(5, 2)
        [(0, 2), (2, 4), (4, 5)]
    """
    for name, value in (("n", n), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def assigned(all_chunks: Sequence[Tuple[int, int]], rank: int, world: int) -> List[Tuple[int, int]]:
    """The chunks of ``rank`` out of ``world``: every ``world``-th, starting at ``rank``.

    Example:
        >>> assigned(chunks(5, 2), 1, 2)
        [(2, 4)]
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world), got rank={rank!r}, world={world!r}")
    return list(all_chunks[rank::world])


def shard_folder(config: dict) -> Path:
    """Where the chunk files of the decoy set with cache configuration ``config`` live."""
    return cache_dir() / "shards" / entry_key("decoys", config)


def _chunk_file(folder: Path, lo: int, hi: int) -> Path:
    return folder / f"images-{lo:07d}-{hi:07d}.pt"


def _read(path: Path):
    try:
        return torch.load(path, weights_only=False)
    except Exception:  # missing, or truncated by a kill: recompute
        return None


def _start_distributed() -> Tuple[int, int]:
    """``(rank, world_size)``: joins torchrun's process group when launched by torchrun, else ``(0, 1)``."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # "cuda" is then this rank's GPU
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=BARRIER_TIMEOUT)
    return dist.get_rank(), dist.get_world_size()


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def run_decoys(settings: Settings, model_name: str, n: Optional[int] = None, *, layer: Optional[str] = None,
               offset: int = 0, chunk: int = DEFAULT_CHUNK, log=print, **overrides) -> dict:
    """Optimise a decoy set over torchrun's ranks and store it where :func:`shared_decoys` finds it.

    Args:
        settings: the experiment settings (:func:`dance_book.experiments.settings`).
        model_name: a model of the settings' scale.
        n: images (default ``settings.n_fidelity``, the set every chapter shares).
        layer, offset, overrides: as for :func:`dance_book.experiments.shared_decoys`.
        chunk: images per chunk file.
        log: where progress lines go (``print``).

    Returns:
        dict with ``rank``, ``world``, ``computed`` and ``kept`` (this rank's chunks computed now and
        found finished from an earlier run), ``chunks`` (all of them) and ``key`` (the cache entry).

    Example:
        >>> import dance_book.experiments as E  # doctest: +SKIP
        >>> run_decoys(E.settings(), "vgg-shapes", 4, offset=50)["chunks"]  # doctest: +SKIP
        1
    """
    n = settings.n_fidelity if n is None else n
    layer, size, config = decoys_key(settings, model_name, n, layer, offset, **overrides)
    rank, world = _start_distributed()
    folder = shard_folder(config)
    folder.mkdir(parents=True, exist_ok=True)
    every = chunks(size, chunk)
    computed = kept = 0
    model = None
    for lo, hi in assigned(every, rank, world):
        path = _chunk_file(folder, lo, hi)
        if _read(path) is not None:
            kept += 1
            continue
        model = model or load_model(model_name)
        x = load_images(settings, hi - lo, offset=offset + lo).images
        log(f"[rank {rank}/{world}] decoys of images {offset + lo}..{offset + hi - 1} ({model_name} at {layer})",
            flush=True)
        value = [d.to("cpu") for d in optimised_decoys(model, x, layer, settings, **overrides)]
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)  # a chunk file is either complete or absent
        computed += 1
    log(f"[rank {rank}/{world}] {computed} chunks computed, {kept} kept from an earlier run", flush=True)
    _barrier(world)
    if rank == 0:
        def gather():
            out = []
            for lo, hi in every:  # image order, whatever rank computed the chunk
                part = _read(_chunk_file(folder, lo, hi))
                if part is None:
                    raise RuntimeError(f"chunk {lo}..{hi} of {folder} is missing after every rank finished")
                out.extend(part)
            return out

        cached("decoys", config, gather)
        log(f"[rank 0/{world}] {size} images' decoys gathered into {cache_dir()}", flush=True)
    _barrier(world)
    return dict(rank=rank, world=world, computed=computed, kept=kept, chunks=len(every), key=entry_key("decoys", config))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dance_book shard",
        description="Optimise a shared decoy set over torchrun's ranks (resumable) and store it in the "
                    "experiments' cache. Scale from DANCE_SCALE; cache from DANCE_CACHE_DIR.")
    parser.add_argument("--model", help="model (default: the scale's main model)")
    # (not "--n": torchrun's own parser would take it for an abbreviation of its options)
    parser.add_argument("--images", type=int, help="images (default: the settings' n_fidelity, the shared set)")
    parser.add_argument("--layer", help="decoy layer (default: the model's Table A2 layer)")
    parser.add_argument("--offset", type=int, default=0, help="skip this many images first")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="images per chunk file")
    args = parser.parse_args(argv)
    s = current_settings()
    result = run_decoys(s, args.model or s.main_model, args.images, layer=args.layer, offset=args.offset,
                        chunk=args.chunk)
    if result["world"] > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
