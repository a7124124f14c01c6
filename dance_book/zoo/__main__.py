"""Command line of the zoo: ``python -m dance_book.zoo train|evaluate NAME ... [--training regular|adversarial|scaat]``."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .registry import ZOO, check_name, evaluate, heldout, load, weights_stem
from .remedies import TRAININGS
from .train import train


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dance_book.zoo", description="Train and evaluate the CI-scale model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train zoo models with their fixed configuration and save weights + record")
    p_train.add_argument("names", nargs="+", help=f"model names ({', '.join(ZOO)}) or 'all'")
    p_train.add_argument("--out", default=None, help="output folder (default: the package's weights folder)")
    p_train.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p_train.add_argument("--n-train", type=int, default=None, help="override the training images (per epoch for Shapes)")
    p_train.add_argument("--n-heldout", type=int, default=None, help="held-out images for the recorded accuracy")
    p_train.add_argument("--seed", type=int, default=None, help="override the seed")
    p_train.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: training is deterministic and, on a shared machine, fastest with one)",
    )
    p_train.add_argument("--training", choices=TRAININGS, default="regular",
                         help="regular, adversarial (PGD, L-inf) or scaat (the book's reading of the SCAAT poster); "
                         "weights go to NAME.pt, NAME-adversarial.pt, NAME-scaat.pt")
    p_train.add_argument("--epsilon", type=float, default=None,
                         help="adversarial training only: the PGD radius (default 0.1, Yeh et al.'s MNIST value)")
    p_train.add_argument("--init", choices=["regular"], default=None,
                         help="remedies only: fine-tune the shipped regular weights instead of starting from random ones")
    p_eval = sub.add_parser("evaluate", help="held-out accuracy of shipped weights")
    p_eval.add_argument("names", nargs="+")
    p_eval.add_argument("--weights-dir", default=None)
    p_eval.add_argument("--training", choices=TRAININGS, default="regular", help="which training's weights")
    sub.add_parser("list", help="list the zoo")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, cfg in ZOO.items():
            print(f"{name}: {cfg['arch']} on {cfg['dataset']}")
        return 0
    names = list(ZOO) if args.names == ["all"] else args.names
    for name in names:
        check_name(name)
    for name in names:
        if args.command == "train":
            rec = train(
                name,
                out=args.out,
                epochs=args.epochs,
                n_train=args.n_train,
                n_heldout=args.n_heldout,
                seed=args.seed,
                threads=args.threads,
                training=args.training,
                epsilon=args.epsilon,
                init=args.init,
            )
            print(
                f"saved {weights_stem(name, args.training)}: accuracy {rec['heldout_accuracy']:.4f}, {rec['file_bytes']} bytes, "
                f"sha256 {rec['sha256']}"
            )
        else:
            model = load(name, weights_dir=args.weights_dir, training=args.training)
            accuracy, _ = evaluate(model, heldout(name))
            print(f"{weights_stem(name, args.training)}: held-out accuracy {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
