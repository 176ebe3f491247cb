"""How aimc's costs grow with model size, measured on this machine (issue "Fast and big", scale projections).

For ResNet-32 (CIFAR-10 shape), ResNet-34 (ImageNet shape, random data), a BERT-base-sized stack of Linear layers
(12 blocks of 768→768 ×4, 768→3072, 3072→768: 84.9 M weights) and a series of square Linear stacks of growing
width, it measures (``joshi2020`` preset, one torch thread):

- device state per weight (persistent ``g_target``, ``g_prog``, ``nu``) and cached weights per weight, bytes;
- ``aimc.convert``, ``aimc.program`` and ``aimc.at_time(t = 1 day)`` wall time (median of N; fewer repeats, at
  least one, for a model whose first call already takes more than ``--budget`` seconds: the count is printed);
- forward overhead: programmed-and-drifted model vs the plain model on the same batch (median per-pair ratio).

``--with FILE ...`` adds the Llama-shaped rows measured by ``benchmarks/bench_memory.py`` (its output saved to
FILE; the last line is its JSON) to the table and the fits: one run each, forward overhead from one forward.

It fits ``log(time) = a + slope · log(weights)`` over all models for program and at_time, writes
``docs/results/scale.csv`` and ``docs/results/scale.png`` (log-log), and prints the table and the slopes.

    .venv/bin/python benchmarks/bench_scale.py [--quick] [--out docs/results] [--with memory_134m.txt ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import header, med, paired, timed  # noqa: E402

import aimc  # noqa: E402
from aimc.inference import device_state_bytes  # noqa: E402
from aimc.models import resnet32_cifar, resnet34_imagenet  # noqa: E402


class LinearStack(nn.Sequential):
    """Transformer-encoder-sized Linear layers (attention q/k/v/o and the two MLP matrices per block, no attention
    arithmetic: only the weight-stationary matrices matter here). Input ``(tokens, width)``."""

    def __init__(self, width: int, blocks: int, mlp: int):
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [nn.Linear(width, width) for _ in range(4)]
            layers += [nn.Linear(width, mlp), nn.GELU(), nn.Linear(mlp, width)]
        super().__init__(*layers)


def cases(quick: bool) -> list[tuple[str, callable, callable]]:
    out = [("ResNet-32 (CIFAR-10)", resnet32_cifar, lambda: torch.randn(128, 3, 32, 32))]
    widths = (128, 256, 512) if quick else (128, 256, 512, 1024)
    for w in widths:
        out.append((f"Linear stack w={w}", lambda w=w: LinearStack(w, 4, 4 * w), lambda w=w: torch.randn(128, w)))
    if not quick:
        out.append(("ResNet-34 (ImageNet)", resnet34_imagenet, lambda: torch.randn(4, 3, 224, 224)))
        out.append(("BERT-base Linear stack", lambda: LinearStack(768, 12, 3072), lambda: torch.randn(128, 768)))
    return out


def _repeated(fn, repeats: int, budget_s: float) -> tuple[float, int]:  # noqa: ANN001
    """Median time of ``fn(k)`` over up to ``repeats`` calls, fewer (at least one) if they would exceed
    ``budget_s``; and the number of calls."""
    ts = [timed(lambda: fn(0))]
    n = max(1, min(repeats, int(budget_s // max(ts[0], 1e-9))))
    ts += [timed(lambda k=k: fn(k)) for k in range(1, n)]
    return med(ts), len(ts)


def measure(name: str, make, make_x, repeats: int, budget_s: float) -> dict:  # noqa: ANN001
    torch.manual_seed(0)
    base = make().eval()
    x = make_x()
    t_conv = timed(lambda: aimc.convert(base, aimc.presets.joshi2020()))
    m = aimc.convert(base, aimc.presets.joshi2020()).eval()
    t_prog, n_prog = _repeated(lambda k: aimc.program(m, seed=k), repeats, budget_s)
    t_drift, n_drift = _repeated(lambda k: aimc.at_time(m, 86400.0, seed=k), repeats, budget_s)
    aimc.program(m, seed=0)  # the forward on the chip of seed 0, 1 day
    aimc.at_time(m, 86400.0, seed=0)
    mem = device_state_bytes(m)
    with torch.inference_mode():
        tb, _, ratio = paired(lambda: base(x), {"a": lambda: m(x)}, 1, repeats, budget_s=60.0)
    row = {"model": name, "weights": int(mem["weights"]), "state_B_per_weight": mem["state_bytes_per_weight"],
           "cache_B_per_weight": mem["cache_bytes_per_weight"], "convert_s": t_conv, "program_s": t_prog,
           "at_time_s": t_drift, "plain_forward_s": med(tb), "input": str(tuple(x.shape)),
           "forward_overhead": med(ratio["a"]), "n_program": n_prog, "n_at_time": n_drift}
    del m, base
    gc.collect()
    return row


def memory_row(path: Path) -> dict:
    """A row of the table from a saved ``bench_memory.py`` output (its last line is the JSON of both cases)."""
    res = json.loads(path.read_text().strip().splitlines()[-1])
    pl, an = res["plain"], res["analog"]
    tag = f"{an['params'] / 1e9:.2f} B" if an["params"] >= 1e9 else f"{an['params'] / 1e6:.0f} M"
    return {"model": f"Llama-shaped {tag} ({an['dtype']}, bench_memory)", "weights": int(an["analog_weights"]),
            "state_B_per_weight": 0.0, "cache_B_per_weight": an["cache_bytes_per_weight"],
            "convert_s": an["convert_s"], "program_s": an["program_s"], "at_time_s": an["at_time_s"],
            "plain_forward_s": pl["forward_s"], "input": "(1, 128) tokens",
            "forward_overhead": an["forward_s"] / pl["forward_s"], "n_program": 1, "n_at_time": 1,
            "peak_rss_ratio": an["peak_gib"] / pl["peak_gib"]}


def slope(df: pd.DataFrame, col: str) -> float:
    return float(np.polyfit(np.log10(df["weights"]), np.log10(df[col]), 1)[0])


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for col, label in (("program_s", "aimc.program"), ("at_time_s", "aimc.at_time (1 day)"),
                       ("convert_s", "aimc.convert")):
        k = slope(df, col)
        ax.loglog(df["weights"], df[col], "o", label=f"{label}: slope {k:.2f}")
        xs = np.logspace(np.log10(df["weights"].min()), np.log10(df["weights"].max()), 20)
        a = np.polyfit(np.log10(df["weights"]), np.log10(df[col]), 1)
        ax.loglog(xs, 10 ** np.polyval(a, np.log10(xs)), "-", color=ax.lines[-1].get_color(), alpha=0.5)
    for _, r in df.iterrows():
        if not r["model"].startswith("Linear stack"):
            ax.annotate(r["model"], (r["weights"], r["program_s"]), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")
    ax.set_xlabel("analog weights")
    ax.set_ylabel("wall time, one CPU thread [s]")
    ax.set_title("aimc cost vs model size (joshi2020 preset)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write scale.csv and scale.png here")
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of program (and of at_time) per model")
    ap.add_argument("--with", dest="memory", type=Path, nargs="*", default=[],
                    help="saved outputs of benchmarks/bench_memory.py to add as rows")
    args = ap.parse_args()
    args.batch, args.warmup = "per model (see table)", 1
    args.repeats = 3 if args.quick else 5
    torch.set_num_threads(1)
    header(args)
    t0 = time.perf_counter()
    rows = []
    for name, make, make_x in cases(args.quick):
        rows.append(measure(name, make, make_x, args.repeats, args.budget))
        r = rows[-1]
        print(f"  {name:<24} {r['weights']:>11,d} weights  state {r['state_B_per_weight']:.0f} B/w  "
              f"convert {r['convert_s']:.3f} s  program {r['program_s']:.3f} s (n={r['n_program']})  at_time "
              f"{r['at_time_s']:.3f} s (n={r['n_at_time']})  forward {r['forward_overhead']:.2f}x plain", flush=True)
    rows += [memory_row(p) for p in args.memory]
    df = pd.DataFrame(rows)
    print()
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for col in ("convert_s", "program_s", "at_time_s"):
        print(f"log-log slope of {col} vs weights: {slope(df, col):.2f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "scale.csv", index=False)
        plot(df, args.out / "scale.png")
        print(f"wrote {args.out / 'scale.csv'} and {args.out / 'scale.png'}")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
