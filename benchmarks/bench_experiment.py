"""Experiment-runner overheads, measured in one run.

1. Resume overhead: checkpoint write time per epoch as a fraction of the epoch time (target < 2 %), for an MNIST
   MLP (full training set) and a ResNet-32 on a CIFAR-10 subset, from the runner's own per-epoch records.
2. Parallel sweeps: `--workers 2` vs `--workers 1` on an MNIST-MLP sweep of 600 cells (target ≥ 1.7× on 2 cores;
   needs both cores free), end to end and in the steady state.

    .venv/bin/python benchmarks/bench_experiment.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from aimc.experiment.runner import run_experiment
from aimc.experiment.spec import experiment_from_dict
from aimc.experiment.store import ResultsStore, load_checkpoint


def _exp(name, model, data, epochs, train_limit=None, evaluation=()):  # noqa: ANN001, ANN202
    d = {"name": name, "model": {"name": model}, "data": {"name": data, "batch_size": 128},
         "training": [{"name": "fp", "kind": "fp", "epochs": epochs, "optimizer": {"name": "sgd", "lr": 0.01}}],
         "evaluation": list(evaluation)}
    if train_limit:
        d["data"]["train_limit"] = train_limit
    return experiment_from_dict(d)


def checkpoint_overhead(tmp: Path, quick: bool) -> None:
    print("[1] checkpoint write time per epoch / epoch time (target < 2 %)")
    print(f"  {'model':<28} {'epochs':>6} {'epoch s':>9} {'ckpt s':>8} {'fraction':>9}  verdict")
    cases = [("mnist_mlp", "mnist", 2, 6000 if quick else None),
             ("resnet32_cifar", "cifar10", 2, 512 if quick else 2560)]
    for model, data, epochs, limit in cases:
        out = tmp / model
        run_experiment(_exp(model, model, data, epochs, limit), out, quiet=True)
        hist = load_checkpoint(out / "checkpoints/fp/last.safetensors")["extra"]["history"]
        ep = sum(h["seconds"] for h in hist) / len(hist)
        # the record of the last epoch is saved before its own checkpoint time is known: use the earlier epochs
        ck = sum(h["checkpoint_seconds"] for h in hist[:-1]) / (len(hist) - 1)
        frac = ck / ep
        label = f"{model} ({data}{', ' + str(limit) + ' imgs' if limit else ''})"
        print(f"  {label:<28} {len(hist):>6} {ep:>9.2f} {ck:>8.4f} {100 * frac:>8.3f}%  "
              f"{'PASS' if frac < 0.02 else 'MISS'}")


def workers_speedup(tmp: Path, quick: bool) -> None:
    print("[2] sweep throughput, --workers 2 vs --workers 1 (MNIST MLP, joshi2020, 10,000 test images per cell; "
          "target ≥ 1.7x; needs both cores free)")
    seeds = 4 if quick else 60
    sweep = {"name": "pcm", "analog": "joshi2020", "models": {"fp": "fp"},
             "times": [25, 3600, 86400, 2592000, 31536000], "seeds": seeds, "compensations": ["none", "gdc"]}
    exp = _exp("w", "mnist_mlp", "mnist", 1, evaluation=[sweep])
    base = tmp / "w_base"
    run_experiment(experiment_from_dict({**_plain(exp), "evaluation": []}), base, quiet=True)
    stamps: dict[int, list[float]] = {}
    add = ResultsStore.add
    try:
        for workers in (1, 2):
            out = tmp / f"w{workers}"
            shutil.copytree(base, out)
            (out / "config.yaml").unlink()
            stamps[workers] = ts = []
            t0 = time.perf_counter()

            def timed_add(self, rows, ts=ts, t0=t0):  # noqa: ANN001, ANN202 - records when each cell reaches the file
                add(self, rows)
                ts.append(time.perf_counter() - t0)

            ResultsStore.add = timed_add
            run_experiment(exp, out, quiet=True, workers=workers)
            ts.append(time.perf_counter() - t0)  # the end of the run (summary and report written)
    finally:
        ResultsStore.add = add
    cells = seeds * len(sweep["times"]) * len(sweep["compensations"])
    for w, ts in stamps.items():
        steady = (len(ts) - 2) / (ts[-2] - ts[0])
        print(f"  workers {w}: {cells} cells in {ts[-1]:.1f} s end to end ({cells / ts[-1]:.1f} cells/s); first cell "
              f"stored after {ts[0]:.2f} s; steady state {steady:.1f} cells/s")
    r = stamps[1][-1] / stamps[2][-1]
    r_steady = (stamps[2][-2] - stamps[2][0]) and (stamps[1][-2] - stamps[1][0]) / (stamps[2][-2] - stamps[2][0])
    print(f"  speed-up end to end {r:.2f}x  {'PASS' if r >= 1.7 else 'MISS'}; steady state {r_steady:.2f}x (the "
          "difference is the pool's fixed cost: spawning, importing torch and loading the run in each worker)")


def _plain(exp):  # noqa: ANN001, ANN202
    from aimc.experiment.schema import to_plain

    return to_plain(exp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("=" * 90)
    print(f"aimc benchmark: bench_experiment.py   command: {' '.join([sys.executable, *sys.argv])}")
    print(f"machine: torch {torch.__version__}, threads 1 per process, cpu_count {os.cpu_count()}, "
          f"python {platform.python_version()}, load avg {os.getloadavg()[0]:.2f}")
    print("=" * 90)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        checkpoint_overhead(Path(d), args.quick)
        workers_speedup(Path(d), args.quick)
    print(f"total wall time {time.perf_counter() - t0:.0f} s; load avg at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
