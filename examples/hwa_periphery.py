r"""Hardware-aware training with and without the periphery in the training forward (``training.periphery``).

    OMP_NUM_THREADS=1 PYTHONPATH=src python examples/hwa_periphery.py digits --seeds 5 \
        --out docs/results/hwa_periphery_digits.csv
    OMP_NUM_THREADS=1 PYTHONPATH=src python examples/hwa_periphery.py mnist --seeds 5 \
        --out docs/results/hwa_periphery_mnist.csv
    OMP_NUM_THREADS=1 PYTHONPATH=src python examples/hwa_periphery.py digits --snr   # tile outputs vs noise

For each training seed s: a floating-point model (digits: ``digits_cnn``; MNIST: ``mnist_mlp`` 784-250-10) is trained
with Adam, then two copies are fine-tuned hardware-aware on the ``aihwkit_default`` preset (additive weight noise
η = 3.8 %, Gaussian clipping at 2σ), identical in everything (initial weights, data order, seed) except
``training.periphery``: off (``F.linear``/convolution on the noisy weights) or on (7-bit DAC with per-vector
ranges, output noise 0.06, iterative bound management, 9-bit ADC at ±12 in every training forward). Both are
programmed on ``aihwkit_default`` and scored at 25 s, 1 day and 1 year after programming, with aihwkit's GDC and
without compensation, over ``--eval-seeds`` programming seeds. The wall time of the HWA fine-tuning of each copy
is recorded (same machine, same run, alternating) to give the training-step cost ratio.

Writes one CSV row per (seed, periphery, compensation, time, programming seed), with the digital accuracy of the
fine-tuned model and the fine-tuning seconds per step; prints a Markdown summary (mean ± std over all rows of a
cell, and the mean over training seeds of the per-seed difference).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

import aimc
from aimc.evaluation import accuracy
from aimc.train.loop import fit

TIMES = (25.0, 86_400.0, 31_536_000.0)
TASKS = {  # model, data, fp epochs, hwa epochs, fp lr, hwa lr, batch size (as examples/digits.yaml, mnist.yaml)
    "digits": dict(model="digits_cnn", fp_epochs=30, hwa_epochs=15, fp_lr=3e-3, hwa_lr=1e-3, batch=64),
    "mnist": dict(model="mnist_mlp", fp_epochs=3, hwa_epochs=2, fp_lr=1e-3, hwa_lr=5e-4, batch=128),
}


def _data(task: str, train_limit: int | None):  # noqa: ANN202
    from aimc import data

    if task == "digits":
        train, test = data.digits("train"), data.digits("test")
    else:
        train, test = data.mnist("train"), data.mnist("test")
    if train_limit is not None:
        train = Subset(train, range(min(train_limit, len(train))))
    return train, test


def run(task: str, seeds: int, eval_seeds: int, fp_epochs: int | None, hwa_epochs: int | None,
        train_limit: int | None) -> pd.DataFrame:
    spec = TASKS[task]
    fp_epochs = spec["fp_epochs"] if fp_epochs is None else fp_epochs
    hwa_epochs = spec["hwa_epochs"] if hwa_epochs is None else hwa_epochs
    train_ds, test_ds = _data(task, train_limit)
    test = DataLoader(test_ds, 1000)
    base = aimc.presets.aihwkit_default()
    rows = []
    for s in range(seeds):
        torch.manual_seed(s)
        model = getattr(aimc.models, spec["model"])()
        loader = DataLoader(train_ds, spec["batch"], shuffle=True, generator=torch.Generator().manual_seed(s))
        fit(model, loader, epochs=fp_epochs, lr=spec["fp_lr"])
        fp_acc = accuracy(model, test)
        order = (False, True) if s % 2 == 0 else (True, False)  # alternate, so machine load hits both alike
        for per in order:
            cfg = dataclasses.replace(base, training=dataclasses.replace(base.training, periphery=per))
            hwa = aimc.convert(model, cfg)
            loader = DataLoader(train_ds, spec["batch"], shuffle=True,
                                generator=torch.Generator().manual_seed(1000 + s))
            torch.manual_seed(1000 + s)
            t0 = time.perf_counter()
            fit(hwa, loader, epochs=hwa_epochs, lr=spec["hwa_lr"])
            step_s = (time.perf_counter() - t0) / (hwa_epochs * len(loader))
            dig = accuracy(hwa, test)
            res = aimc.evaluate(hwa, test, TIMES, range(eval_seeds), ("none", "gdc"), progress=False)
            for r in res.table.to_dict("records"):
                rows.append({"task": task, "train_seed": s, "periphery": per, "compensation": r["compensation"],
                             "t_seconds": r["t_seconds"], "prog_seed": r["seed"], "accuracy": r["accuracy"],
                             "hwa_digital": dig, "fp_digital": fp_acc, "step_seconds": step_s,
                             "fp_epochs": fp_epochs, "hwa_epochs": hwa_epochs})
            print(f"seed {s} periphery={per}: digital {100 * dig:.2f} %, {1000 * step_s:.1f} ms/step, "
                  + ", ".join(f"{c} {t:g}s {100 * a:.2f}" for (c, t), a in
                              res.table.groupby(["compensation", "t_seconds"])["accuracy"].mean().items()),
                  flush=True)
    return pd.DataFrame(rows)


def summary(df: pd.DataFrame) -> str:
    """Markdown: per (compensation, time) mean ± std (over train × programming seeds) without / with periphery,
    and the mean ± std over training seeds of the per-seed difference (with − without)."""
    lines = ["| compensation | t | without periphery (%) | with periphery (%) | difference (pp), per training seed |",
             "|---|---|---|---|---|"]
    for (c, t), g in df.groupby(["compensation", "t_seconds"]):
        a, b = g[~g.periphery].accuracy * 100, g[g.periphery].accuracy * 100
        per_seed = g.groupby(["train_seed", "periphery"]).accuracy.mean().unstack() * 100
        d = per_seed[True] - per_seed[False]
        lines.append(f"| {c} | {t:g} s | {a.mean():.2f} ± {a.std():.2f} | {b.mean():.2f} ± {b.std():.2f} | "
                     f"{d.mean():+.2f} ± {d.std():.2f} (n={len(d)}) |")
    dig = df.groupby(["train_seed", "periphery"]).hwa_digital.first().unstack() * 100
    step = df.groupby("periphery").step_seconds.mean()
    lines.append("")
    lines.append(f"digital accuracy after HWA: without {dig[False].mean():.2f} ± {dig[False].std():.2f} %, with "
                 f"{dig[True].mean():.2f} ± {dig[True].std():.2f} %; FP {100 * df.fp_digital.mean():.2f} %")
    lines.append(f"HWA training step: without {1000 * step[False]:.1f} ms, with {1000 * step[True]:.1f} ms "
                 f"(ratio {step[True] / step[False]:.2f})")
    return "\n".join(lines)


def snr(task: str, fp_epochs: int | None, train_limit: int | None) -> str:
    """Per analog layer of the seed-0 floating-point model: rows per tile, and the RMS of the tile outputs the
    periphery sees (inputs divided by their per-vector abs-max, weights in weight units, as ``aihwkit_default``
    computes) against its output noise (0.06) and ADC step (0.047), on 512 training inputs."""
    spec = TASKS[task]
    train_ds, _ = _data(task, train_limit)
    torch.manual_seed(0)
    model = getattr(aimc.models, spec["model"])()
    loader = DataLoader(train_ds, spec["batch"], shuffle=True, generator=torch.Generator().manual_seed(0))
    fit(model, loader, epochs=spec["fp_epochs"] if fp_epochs is None else fp_epochs, lr=spec["fp_lr"])
    p = aimc.presets.aihwkit_default().periphery
    x = torch.stack([train_ds[i][0] for i in range(512)])
    lines = ["| layer | rows | RMS tile output | / out_noise | / ADC step |", "|---|---|---|---|---|"]
    for name, m in model.named_modules():
        if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        seen: list[torch.Tensor] = []
        h = m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
        model.eval()
        with torch.no_grad():
            model(x)
        h.remove()
        inp = seen[0]
        if isinstance(m, torch.nn.Conv2d):
            inp = torch.nn.functional.unfold(inp, m.kernel_size, padding=m.padding, stride=m.stride)
            inp = inp.transpose(1, 2).reshape(-1, inp.shape[1])
        inp = inp.reshape(inp.shape[0], -1)
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        xn = inp / inp.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
        rms = float((xn @ w.t()).pow(2).mean().sqrt())
        step = 2 * p.out_bound / (2**p.adc_bits - 2)
        lines.append(f"| {name} | {w.shape[1]} | {rms:.3f} | {rms / p.out_noise:.1f} | {rms / step:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=sorted(TASKS))
    ap.add_argument("--seeds", type=int, default=5, help="training seeds (fp + both HWA fine-tunes each)")
    ap.add_argument("--eval-seeds", type=int, default=3, help="programming seeds per trained model")
    ap.add_argument("--fp-epochs", type=int, default=None)
    ap.add_argument("--hwa-epochs", type=int, default=None)
    ap.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--out", default=None, help="CSV file of every row")
    ap.add_argument("--snr", action="store_true", help="only print each layer's tile-output RMS vs the periphery's "
                    "output noise and ADC step (seed-0 floating-point model)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.snr:
        print(snr(a.task, a.fp_epochs, a.train_limit))
        return
    df = run(a.task, a.seeds, a.eval_seeds, a.fp_epochs, a.hwa_epochs, a.train_limit)
    if a.out:
        df.to_csv(a.out, index=False)
    print(summary(df))


if __name__ == "__main__":
    main()
