"""Learning-rate choice for the mixed-precision MNIST MLP on a validation split (never on the test set).

The first results page chose lr = 0.2 from pilots scored on the test set. This script redoes the choice honestly:
it holds out 10,000 of the 60,000 training images (a fixed, seeded split), trains the MLP of
``run_experiments.py`` (same model, schedule, batch size, device) on the other 50,000 with each candidate learning
rate, scores each on the held-out images only, and writes ``mixed_precision_lr_pilot.csv`` (columns method, lr,
seed, epochs, val_accuracy) and a short Markdown table. The test set is not loaded.

    .venv/bin/python examples/mixed_precision/pilot_lr.py [--lrs 0.05,0.1,0.2,0.4] [--epochs 10] [--out docs/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path

import torch

import aimc.data

sys.path.insert(0, str(Path(__file__).parent))
from run_experiments import EXPERIMENTS, run  # noqa: E402

from aimc.experiment.store import atomic_write, write_csv_rows  # noqa: E402

N_VAL = 10_000


def split(seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, validation) from MNIST's training images: a seeded random 10,000 held out."""
    tr = aimc.data.mnist("train")
    x, y = tr.tensors
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, rest = perm[:N_VAL], perm[N_VAL:]
    return (x[rest], y[rest]), (x[val], y[val])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="mlp", help="an experiment of run_experiments.py (mlp, cnn, ...)")
    ap.add_argument("--lrs", default="0.05,0.1,0.2,0.4", help="comma-separated learning rates")
    ap.add_argument("--epochs", type=int, default=None, help="default: the experiment's own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="mixed_precision", help="comma-separated: fp, mixed_precision")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = split()
    rows = []
    for method in args.methods.split(","):
        for lr in (float(v) for v in args.lrs.split(",")):
            exp = dataclasses.replace(EXPERIMENTS[args.experiment], lr=lr)
            t0 = time.perf_counter()
            res = dict(run(f"{args.experiment}_pilot", exp, method, args.seed, data, epochs=args.epochs,
                           log=lambda m: None))
            rows.append({"experiment": args.experiment, "method": method, "lr": lr, "seed": args.seed,
                         "epochs": int(res["epochs"]),
                         "val_accuracy": res["test_accuracy"]})  # run() calls its held-out data "test"
            print(f"{method} lr {lr}: validation {100 * res['test_accuracy']:.2f} % "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    best = {m: max((r for r in rows if r["method"] == m), key=lambda r: r["val_accuracy"]) for m in
            {r["method"] for r in rows}}
    lines = ["| experiment | method | lr | validation accuracy (%) |", "|---|---|---|---|"]
    lines += [f"| {r['experiment']} | {r['method']} | {r['lr']} | {100 * r['val_accuracy']:.2f}"
              f"{' ← best' if best[r['method']] is r else ''} |" for r in rows]
    md = "\n".join([f"Command: `{shlex.join(['python', *sys.argv])}` (seed {args.seed}, {rows[0]['epochs']} epochs, "
                    f"50,000 training / {N_VAL:,} held-out training images; the test set is not used).", "",
                    *lines, ""])
    print(md)
    if args.out is not None:
        stem = f"mixed_precision_lr_pilot{'' if args.experiment == 'mlp' else '_' + args.experiment}"
        write_csv_rows(args.out / f"{stem}.csv", rows, list(rows[0]))
        atomic_write(args.out / f"{stem}.md", lambda tmp: Path(tmp).write_text(
            f"# Learning rate of the mixed-precision {args.experiment}, chosen on a validation split\n\n" + md))


if __name__ == "__main__":
    main()
