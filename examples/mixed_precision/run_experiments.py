"""Mixed-precision training with simulated PCM synapses vs floating point on MNIST (Nandakumar et al. 2020).

Experiments (``EXPERIMENTS`` below; each a fixed plan, no choice is made on test data):

* ``mlp``: 784-250-10 MLP; methods ``fp`` (torch.optim.SGD) and ``mixed_precision`` (aimc.train.MixedPrecision);
* ``mlp_no_chi``: the same MLP, mixed precision without χ (each update rounded to the nearest whole number of
  pulses, remainder discarded): the ablation;
* ``mlp_slow_clock``: the MLP with 1 s of simulated time per mini-batch instead of 10 ms (100× more drift time);
* ``mlp_no_read_noise_no_drift``: the MLP with read noise and drift off (only the pulse response is non-ideal);
* ``mlp_val_lr``: the MLP with the learning rate chosen on a validation split (``pilot_lr.py``), not on test data;
* ``cnn``: ``aimc.models.mnist_cnn`` (conv weights and FC weights on PCM, batch norm digital);
* ``cnn_val_lr``: the CNN, both methods, with the learning rate chosen on a validation split (``pilot_lr.py``);
* ``lstm``: ``aimc.models.mnist_lstm`` on sequential MNIST (28 rows as 28 time steps; the LSTM's input and
  recurrent matrices and the output layer on PCM), all 60,000 training images.
* ``mlp_periphery``, ``cnn_periphery``: the MLP / the CNN with ``MixedPrecision(periphery=True)`` and aihwkit's
  default periphery in the forward and backward MVMs; test accuracy read through the same MVMs (periphery, fresh
  read noise; batch norm with its running statistics).

Both methods of one experiment share architecture, data, epochs, batch size, learning-rate schedule, the initial
weights and the data order of a seed. Mixed precision uses the default ``PCMTrainingDevice`` with drift and
read noise on; its test accuracy is measured on one fresh noisy read of the devices after the last epoch.

Usage (from the repository root, so that ``../shared/data/mnist.npz`` is found)::

    .venv/bin/python examples/mixed_precision/run_experiments.py                  # every experiment, all seeds
    .venv/bin/python examples/mixed_precision/run_experiments.py --only mlp --seeds 0
    .venv/bin/python examples/mixed_precision/run_experiments.py --quick --out /tmp/mp   # smoke test

Resumable: after each (experiment, method, seed) run its rows are merged into the CSV (temporary file +
``os.replace``); a re-run skips runs already in the CSV. Columns: experiment, method, seed, metric, value.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import aimc
import aimc.data
import aimc.models
from aimc.errors import FileFormatError
from aimc.experiment.store import read_csv_rows, write_csv_rows
from aimc.train import MixedPrecision

COLUMNS = ("experiment", "method", "seed", "metric", "value")
CSV_NAME = "mixed_precision.csv"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment: model, training budget, and the methods it runs."""

    model: str
    epochs: int
    lr: float
    batch_size: int = 64
    train_limit: int | None = None  # None: all 60,000 training images (else the first limit/10 per class)
    methods: tuple[str, ...] = ("fp", "mixed_precision")
    mp: dict = dataclasses.field(default_factory=dict)  # extra MixedPrecision arguments
    seeds: tuple[int, ...] = (0, 1, 2)
    periphery: str | None = None  # preset whose periphery the analog layers get (with mp={"periphery": True})


EXPERIMENTS: dict[str, Experiment] = {
    "mlp": Experiment("mnist_mlp", epochs=20, lr=0.2),
    "mlp_no_chi": Experiment("mnist_mlp", epochs=20, lr=0.2, methods=("mixed_precision",),
                             mp={"accumulate": False}),
    "mlp_slow_clock": Experiment("mnist_mlp", epochs=20, lr=0.2, methods=("mixed_precision",),
                                 mp={"seconds_per_batch": 1.0}, seeds=(0,)),
    "mlp_no_read_noise_no_drift": Experiment("mnist_mlp", epochs=20, lr=0.2, methods=("mixed_precision",),
                                             mp={"read_noise": False, "drift": False}, seeds=(0,)),
    # the learning rate chosen on a validation split (pilot_lr.py: 0.1-0.4 within one standard error; 0.4 highest)
    "mlp_val_lr": Experiment("mnist_mlp", epochs=20, lr=0.4, methods=("mixed_precision",)),
    "cnn": Experiment("mnist_cnn", epochs=5, lr=0.05),
    # pilot_lr.py --experiment cnn: 0.2 best on validation for both methods (0.05 above was piloted on test data)
    "cnn_val_lr": Experiment("mnist_cnn", epochs=5, lr=0.2),
    "lstm": Experiment("mnist_lstm", epochs=10, lr=0.5),
    # pilot_lr.py --experiment lstm (3 epochs): fp clearly best at 1.0 (98.13 vs 97.53 % at 0.5); mixed precision
    # 0.5 and 1.0 within one standard error (97.57, 97.61 %), so its 0.5 above stands
    "lstm_val_lr": Experiment("mnist_lstm", epochs=10, lr=1.0, methods=("fp",)),
    # the MLP with aihwkit's default periphery (7-bit DAC per vector, 9-bit ADC, output noise, bound management)
    # in the forward and backward training MVMs and in the test reads; same lr as "mlp"
    "mlp_periphery": Experiment("mnist_mlp", epochs=20, lr=0.2, methods=("mixed_precision",),
                                mp={"periphery": True}, periphery="aihwkit_default"),
    # the CNN the same way, at its validation-chosen lr (cnn_val_lr)
    "cnn_periphery": Experiment("mnist_cnn", epochs=5, lr=0.2, methods=("mixed_precision",),
                                mp={"periphery": True}, periphery="aihwkit_default"),
}


FP_BASELINE = {"cnn_periphery": "cnn_val_lr"}
"""Experiments without an fp run of their own: the experiment whose fp run they are compared with (default mlp)."""


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def analog_config(periphery: str | None = None) -> aimc.AnalogConfig:
    """Conversion config: no hardware-aware training noise (the devices' reads are the noise), ideal periphery
    (or the periphery of the preset named ``periphery``)."""
    cfg = dataclasses.replace(aimc.presets.joshi2020(),
                              training=aimc.TrainingConfig(noise="none", clip="none"), name="mixed_precision")
    if periphery is not None:
        cfg = dataclasses.replace(cfg, periphery=getattr(aimc.presets, periphery)().periphery)
    return cfg


def build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(_seed(seed, 1))
    return aimc.models.get_model(name)


def _fraction_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y``, in its current modes, ``batch`` images at a time."""
    return sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch)) / len(x)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    model.eval()
    acc = _fraction_correct(model, x, y, batch)
    model.train()
    return acc


@torch.no_grad()
def accuracy_through_mvms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2000) -> float:
    """Test accuracy with every test vector read through the training MVMs (the devices with fresh read noise
    per read and the periphery of ``MixedPrecision(periphery=True)``): the analog layers stay in train mode (their
    MVM hook), batch norm and dropout are put in eval mode (running statistics, no dropout)."""
    model.train()
    digital = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))]
    for m in digital:
        m.eval()
    try:
        return _fraction_correct(model, x, y, batch)
    finally:
        for m in digital:
            m.train()


def run(exp_name: str, exp: Experiment, method: str, seed: int, data, *, epochs: int | None = None,
        log=print) -> list[tuple[str, float]]:
    """Train one (experiment, method, seed); returns [(metric, value)]."""
    (xtr, ytr), (xte, yte) = data
    epochs = exp.epochs if epochs is None else epochs
    plain = build(exp.model, seed)
    if method == "fp":
        model, opt = plain, None
        optim = torch.optim.SGD(model.parameters(), lr=exp.lr)
    else:
        model = aimc.convert(plain, analog_config(exp.periphery))
        optim = opt = MixedPrecision(model, lr=exp.lr, seed=_seed(seed, 4), **exp.mp)
    test_acc = accuracy_through_mvms if exp.periphery is not None else accuracy
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=epochs)
    order = torch.Generator().manual_seed(_seed(seed, 2))
    torch.manual_seed(_seed(seed, 3))
    rows: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(xtr), generator=order)
        loss_sum = 0.0
        for i in range(0, len(xtr), exp.batch_size):
            idx = perm[i:i + exp.batch_size]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            loss_sum += float(loss.detach()) * len(idx)
        sched.step()
        acc = test_acc(model, xte, yte)
        rows += [(f"epoch{ep + 1}/train_loss", loss_sum / len(xtr)), (f"epoch{ep + 1}/test_accuracy", acc)]
        msg = f"  [{exp_name} {method} seed {seed}] epoch {ep + 1}/{epochs}: loss {loss_sum / len(xtr):.4f}, " \
              f"test {100 * acc:.2f} % ({time.perf_counter() - t0:.0f} s)"
        if opt is not None:
            rep = opt.epoch_report()
            rows += [(f"epoch{ep + 1}/pulses", rep.pulses), (f"epoch{ep + 1}/refreshes", rep.refreshes),
                     (f"epoch{ep + 1}/frac_updated_per_step", rep.frac_updated_per_step),
                     (f"epoch{ep + 1}/frac_updated", rep.frac_updated)]
            msg += f"; {rep}"
        log(msg)
    wall = time.perf_counter() - t0
    rows += [("test_accuracy", rows[-1][1] if opt is None else test_acc(model, xte, yte)), ("wall_seconds", wall),
             ("epochs", epochs), ("train_images", len(xtr))]
    if opt is not None:
        opt.read_weights(noise=False)  # drifted devices without read noise
        rows.append(("test_accuracy_noise_free_read", accuracy(model, xte, yte)))
        tot = opt.totals
        rows += [("pulses_per_epoch", tot.pulses / epochs), ("pulses_per_weight_per_epoch", tot.pulses_per_weight
                                                              / epochs),
                 ("refreshes_per_epoch", tot.refreshes / epochs), ("refresh_pulses_per_epoch",
                                                                    tot.refresh_pulses / epochs),
                 ("analog_weights", tot.weights), ("skipped_steps", tot.skipped_steps),
                 ("epsilon_weight_units_min", min(opt.granularity().values()))]
    return rows


# ------------------------------------------------------------------------------------------------ CSV store

def read_rows(path: Path) -> list[dict]:
    try:
        return read_csv_rows(path, COLUMNS)
    except FileFormatError as e:
        raise SystemExit(str(e)) from None


def write_rows_atomic(path: Path, rows: list[dict]) -> None:
    write_csv_rows(path, sorted(rows, key=lambda r: (r["experiment"], r["method"], int(r["seed"]), r["metric"])),
                   COLUMNS)


def by_seed(rows: list[dict], group: Callable[[dict], Any], keep: Callable[[dict], bool] = lambda r: True
            ) -> dict[Any, dict[int, dict[str, float]]]:
    """``{group(row): {seed: {metric: value}}}`` over the rows ``keep`` accepts."""
    by: dict[Any, dict[int, dict[str, float]]] = {}
    for r in rows:
        if keep(r):
            by.setdefault(group(r), {}).setdefault(int(r["seed"]), {})[r["metric"]] = float(r["value"])
    return by


def summary_markdown(rows: list[dict]) -> str:
    """Markdown table: per experiment and method, final test accuracy (mean ± std over seeds, and per seed), the
    gap to the fp baseline of the same experiment (or of ``mlp`` for the ablation), pulses and wall time."""
    by = by_seed(rows, lambda r: (r["experiment"], r["method"]))
    lines = ["| experiment | method | seeds | test accuracy (%) mean ± std | per seed | gap to fp (pp) | "
             "pulses / weight / epoch | refreshes / epoch | wall time per run (s) |", "|" + "---|" * 9]
    for (exp, method), seeds in sorted(by.items()):
        if not all("test_accuracy" in m for m in seeds.values()):
            continue  # the GAN has its own table (gan_markdown)
        acc = np.array([100 * m["test_accuracy"] for m in seeds.values()])
        base = by.get((exp if (exp, "fp") in by else FP_BASELINE.get(exp, "mlp"), "fp"), {})
        gaps = [100 * (seeds[s]["test_accuracy"] - base[s]["test_accuracy"]) for s in seeds if s in base]
        gap = f"{np.mean(gaps):+.2f}" if gaps and method != "fp" else "–"
        ppw = [m.get("pulses_per_weight_per_epoch", np.nan) for m in seeds.values()]
        ref = [m.get("refreshes_per_epoch", np.nan) for m in seeds.values()]
        wall = np.mean([m["wall_seconds"] for m in seeds.values()])
        sd = f" ± {acc.std(ddof=1):.2f}" if len(acc) > 1 else ""
        lines.append(f"| {exp} | {method} | {len(acc)} | {acc.mean():.2f}{sd} | "
                     f"{', '.join(f'{a:.2f}' for a in acc)} | {gap} | "
                     f"{'–' if np.isnan(ppw).all() else f'{np.nanmean(ppw):.3f}'} | "
                     f"{'–' if np.isnan(ref).all() else f'{np.nanmean(ref):.0f}'} | {wall:.0f} |")
    return "\n".join(lines)


def cost_markdown(rows: list[dict]) -> str:
    """Markdown table of the cost of mixed-precision training (means over seeds)."""
    by = by_seed(rows, lambda r: r["experiment"], keep=lambda r: r["method"] == "mixed_precision")
    lines = ["| experiment | analog weights | epochs | SET pulses / epoch (mean) | epoch 1 | last epoch | "
             "pulses / weight / epoch | % weights pulsed per step (epoch 1 → last) | % weights pulsed in epoch 1 | "
             "refreshes / epoch | refresh SET pulses / epoch |", "|" + "---|" * 11]
    for exp, seeds in sorted(by.items()):
        m = list(seeds.values())
        ep = int(m[0]["epochs"])

        def mean(key: str) -> float:
            return float(np.mean([d.get(key, np.nan) for d in m]))
        def f(key: str, spec: str, scale: float = 1.0) -> str:
            v = mean(key)
            return "–" if np.isnan(v) else format(scale * v, spec)
        lines.append(f"| {exp} | {int(m[0]['analog_weights']):,} | {ep} | {f('pulses_per_epoch', ',.0f')} | "
                     f"{f('epoch1/pulses', ',.0f')} | {f(f'epoch{ep}/pulses', ',.0f')} | "
                     f"{f('pulses_per_weight_per_epoch', '.3f')} | "
                     f"{f('epoch1/frac_updated_per_step', '.4f', 100)} → "
                     f"{f(f'epoch{ep}/frac_updated_per_step', '.4f', 100)} | "
                     f"{f('epoch1/frac_updated', '.1f', 100)} | {f('refreshes_per_epoch', ',.0f')} | "
                     f"{f('refresh_pulses_per_epoch', ',.0f')} |")
    return "\n".join(lines)


def gan_markdown(rows: list[dict]) -> str:
    """Markdown table of the GAN experiment (``gan.py``): classifier score and classifier-feature FID."""
    by = by_seed(rows, lambda r: r["method"], keep=lambda r: r["experiment"] == "gan")
    if not by:
        return ""
    lines = ["| method | seeds | classifier score (per seed) | classifier FID (per seed) | real test digits: score, "
             "FID | wall time per run (s) |", "|" + "---|" * 6]
    for method, seeds in sorted(by.items()):
        m = list(seeds.values())
        sc = ", ".join(f"{d['classifier_score']:.2f}" for d in m)
        fid = ", ".join(f"{d['classifier_fid']:.1f}" for d in m)
        lines.append(f"| {method} | {len(m)} | {np.mean([d['classifier_score'] for d in m]):.2f} ({sc}) | "
                     f"{np.mean([d['classifier_fid'] for d in m]):.1f} ({fid}) | "
                     f"{m[0]['real_classifier_score']:.2f}, {abs(m[0]['real_classifier_fid']):.1f} | "
                     f"{np.mean([d['wall_seconds'] for d in m]):.0f} |")
    return "\n".join(lines)


LABELS = {("mlp", "fp"): "fp", ("mlp", "mixed_precision"): "mixed precision",
          ("mlp_no_chi", "mixed_precision"): "no χ (ablation)",
          ("mlp_slow_clock", "mixed_precision"): "mixed precision, 1 s per batch (drift)",
          ("mlp_no_read_noise_no_drift", "mixed_precision"): "mixed precision, no read noise/drift"}


def plot_curves(rows: list[dict], path: Path) -> None:
    """Test accuracy per epoch (mean over seeds): one panel per model (the MLP variants share one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        if r["metric"].endswith("/test_accuracy"):
            ep = int(r["metric"].split("/")[0][5:])
            curves.setdefault((r["experiment"], r["method"]), {}).setdefault(ep, []).append(100 * float(r["value"]))
    panels: dict[str, list[tuple[str, str]]] = {}
    for e, m in sorted(curves):
        if e not in EXPERIMENTS:
            continue
        panels.setdefault(EXPERIMENTS[e].model + (" (ablation)" if e == "mlp_no_chi" else ""), []).append((e, m))
    if "mnist_mlp (ablation)" in panels:
        panels["mnist_mlp (ablation)"] += [k for k in (("mlp", "fp"), ("mlp", "mixed_precision")) if k in curves]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), squeeze=False)
    for ax, (title, keys) in zip(axes[0], sorted(panels.items())):
        for key in keys:
            c = curves[key]
            eps = sorted(c)
            label = LABELS.get(key, f"{key[0]}: {key[1].replace('_', ' ')}")
            n_seeds = len(c[eps[-1]])
            ax.plot(eps, [np.mean(c[k]) for k in eps], marker="o", ms=3,
                    label=label + (f" ({n_seeds} seeds)" if n_seeds > 1 else ""))
        ax.set_title(f"{title} on MNIST")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(80 if "ablation" in title else 90 if "lstm" in title else 95, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_data(train_limit: int | None, quick: bool):
    tr = aimc.data.mnist("train", limit=2000 if quick else train_limit)
    te = aimc.data.mnist("test", limit=1000 if quick else None)
    return (tr.tensors[0], tr.tensors[1]), (te.tensors[0], te.tensors[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated experiment names")
    ap.add_argument("--methods", default=None, help="comma-separated methods (default: the experiment's)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the experiment's)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2000 training images, 1 epoch")
    ap.add_argument("--report", action="store_true", help="only print the summary table and redraw the figure")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / CSV_NAME
    if args.report:
        rows = read_rows(path)
        print(summary_markdown(rows))
        print()
        print(cost_markdown(rows))
        print()
        print(gan_markdown(rows))
        plot_curves(rows, args.out / "mixed_precision_curves.png")
        return 0
    print("command:", " ".join([sys.executable, *sys.argv]), flush=True)
    for name in args.only.split(","):
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; known: {list(EXPERIMENTS)}")
        exp = EXPERIMENTS[name]
        data = load_data(exp.train_limit, args.quick)
        seeds = exp.seeds if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
        methods = exp.methods if args.methods is None else tuple(m for m in args.methods.split(",")
                                                                  if m in exp.methods)
        for seed in seeds:
            for method in methods:
                rows = read_rows(path)
                if any(r["experiment"] == name and r["method"] == method and int(r["seed"]) == seed
                       and r["metric"] == "test_accuracy" for r in rows):
                    print(f"skip {name} {method} seed {seed}: already in {path}", flush=True)
                    continue
                print(f"run {name} {method} seed {seed}", flush=True)
                res = run(name, exp, method, seed, data, epochs=1 if args.quick else None,
                          log=lambda m: print(m, flush=True))
                rows = [r for r in read_rows(path) if not (r["experiment"] == name and r["method"] == method
                                                           and int(r["seed"]) == seed)]
                rows += [{"experiment": name, "method": method, "seed": seed, "metric": k, "value": repr(float(v))}
                         for k, v in res]
                write_rows_atomic(path, rows)
                acc = dict(res)["test_accuracy"]
                print(f"done {name} {method} seed {seed}: test {100 * acc:.2f} %, "
                      f"{dict(res)['wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
