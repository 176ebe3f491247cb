"""Learning rate of the MNIST GAN (``gan.py``) chosen on a validation split, never on the test set.

The GAN's lr = 0.1 was first chosen in short pilots scored against the test digits. This script redoes the choice
honestly: it holds out the same seeded 10,000 training images as ``pilot_lr.py``, trains the scoring classifier and
the GAN (same networks, schedule, batch size, device, noise draws as ``gan.py``) on the other 50,000, and scores
each learning rate by the classifier-feature Fréchet distance (and the classifier score) of 10,000 generated
digits against the held-out images. The test set is not loaded. Writes ``mixed_precision_lr_pilot_gan.csv``
(columns method, lr, seed, epochs, val_classifier_fid, val_classifier_score, wall_seconds) and a Markdown table.

    .venv/bin/python examples/mixed_precision/pilot_gan_lr.py [--lrs 0.025,0.05,0.1,0.2] [--epochs 10] [--out docs/results]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import gan  # noqa: E402
from pilot_lr import split  # noqa: E402
from run_experiments import _seed  # noqa: E402

from aimc.experiment.store import atomic_write, write_csv_rows  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lrs", default="0.025,0.05,0.1,0.2", help="comma-separated learning rates")
    ap.add_argument("--epochs", type=int, default=gan.EPOCHS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="fp,mixed_precision", help="comma-separated: fp, mixed_precision")
    ap.add_argument("--limit", type=int, default=None, help="smoke test: use only this many training images")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    (x_tr, y_tr), (x_val, _) = split()
    if args.limit is not None:
        x_tr, y_tr, x_val = x_tr[:args.limit], y_tr[:args.limit], x_val[:args.limit]
    clf = gan.train_classifier(x_tr, y_tr)
    ref_feat, _ = gan.features(clf, x_val)
    x_real = gan.to_pm1(x_tr)
    n_gen = min(10_000, len(x_val))
    rows = []
    for method in args.methods.split(","):
        for lr in (float(v) for v in args.lrs.split(",")):
            t0 = time.perf_counter()
            g, _ = gan.run(method, args.seed, x_real, args.epochs, log=lambda m: None, lr=lr)
            with torch.no_grad():
                z = torch.randn(n_gen, gan.Z, generator=torch.Generator().manual_seed(_seed(args.seed, 16)))
                score, fid = gan.quality(clf, gan.from_pm1(g(z)), ref_feat)
            rows.append({"method": method, "lr": lr, "seed": args.seed, "epochs": args.epochs,
                         "val_classifier_fid": fid, "val_classifier_score": score,
                         "wall_seconds": round(time.perf_counter() - t0, 1)})
            print(f"{method} lr {lr}: validation classifier FID {fid:.2f}, score {score:.2f} "
                  f"({rows[-1]['wall_seconds']:.0f} s)", flush=True)
    best = {m: min((r for r in rows if r["method"] == m), key=lambda r: r["val_classifier_fid"])
            for m in {r["method"] for r in rows}}
    lines = ["| method | lr | validation classifier FID (lower is better) | classifier score |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['lr']} | {r['val_classifier_fid']:.2f}{' ← best' if best[r['method']] is r else ''}"
              f" | {r['val_classifier_score']:.2f} |" for r in rows]
    md = "\n".join([f"Command: `{shlex.join(['python', *sys.argv])}` (seed {args.seed}, {args.epochs} epochs, "
                    f"{len(x_tr):,} training / {len(x_val):,} held-out training images; the test set is not used).",
                    "", *lines, ""])
    print(md)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_csv_rows(args.out / "mixed_precision_lr_pilot_gan.csv", rows, list(rows[0]))
        atomic_write(args.out / "mixed_precision_lr_pilot_gan.md", lambda tmp: Path(tmp).write_text(
            "# Learning rate of the mixed-precision GAN, chosen on a validation split\n\n" + md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
