"""Command line of the book's code: ``python -m dance_book shard ...`` (also under ``torchrun -m``).

``shard``: optimise a shared decoy set over torchrun's ranks into the experiments' cache
(:mod:`dance_book.experiments.shard`; ``python -m dance_book shard --help``).
"""
import sys

COMMANDS = ("shard",)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m dance_book {{{','.join(COMMANDS)}}} [options]  (one of {COMMANDS}, then --help)",
              file=sys.stderr)
        return 2
    from .experiments.shard import main as shard_main

    return shard_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
