"""Noise-injection study of Joshi et al., Nat. Commun. 11, 2473 (2020), Fig. 2, on MNIST with a 784-250-10 MLP.

Every network is trained with relative training weight noise η_tr and then evaluated under relative inference
weight noise η_inf, both taken from {0, 1, 2, 3.8, 6, 8, 10} %.

Noise model (one weight matrix W of a Linear/Conv layer, N a fresh standard normal per weight):

* training: W + η_tr·max|W|·N, max|W| the current largest |w| of the layer, drawn fresh on every mini-batch;
  gradients flow through the noisy weights and the update goes to the clean weights. This is aimc's own
  training forward pass (``aimc.convert`` with ``TrainingConfig(noise="additive", eta=η_tr, clip="none")``,
  ``noise="none"`` for η_tr = 0). Weight clipping is off so that the study isolates the noise.
* inference: one draw per inference run: a copy of the trained (clean) weights, W + η_inf·max|W|·N per layer
  (seeded ``torch.Generator``), evaluated on the whole MNIST test set.

Everything else is the same for every η_tr: initial weights, data order, optimizer (Adam, lr 1e-3, batch 128)
and epoch budget. No choice is made on test data (all settings fixed in advance, the final-epoch model is
evaluated). Seeds: the initial weights and the data order depend only on the training seed, the training noise
on the training seed too (so models of different η_tr are paired by training seed); the inference noise
depends on (training seed, inference seed) only, so all η_tr and η_inf see the same standard normal draws for
one (training seed, inference seed).

Usage (from the repository root, so that ``../shared/data/mnist.npz`` is found)::

    python examples/noise_injection_mnist.py                 # full study into docs/results
    python examples/noise_injection_mnist.py --quick --out /tmp/ni

Resumable: after each trained (η_tr, training seed) its evaluation rows are appended to the CSV (written to a
temporary file, then ``os.replace``); a re-run skips the pairs already in the CSV and only redraws the figures.

Outputs in ``--out``: ``noise_injection_mnist.csv`` (eta_train, eta_inference, train_seed, inference_seed,
accuracy as a fraction; η as fractions), ``noise_injection_mnist_heatmap.png``, ``noise_injection_mnist_lines.png``
and, with ``--keep-models``, each model's plain state_dict in ``noise_injection_models/`` (safetensors).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import time
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

CSV_NAME = "noise_injection_mnist.csv"
HEATMAP_NAME = "noise_injection_mnist_heatmap.png"
LINES_NAME = "noise_injection_mnist_lines.png"
MODELS_DIR = "noise_injection_models"
COLUMNS = ("eta_train", "eta_inference", "train_seed", "inference_seed", "accuracy")

ETAS = (0.0, 0.01, 0.02, 0.038, 0.06, 0.08, 0.10)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run of the study does."""

    eta_train: tuple[float, ...]
    eta_inference: tuple[float, ...]
    train_seeds: tuple[int, ...]
    inference_seeds: tuple[int, ...]
    epochs: int
    train_limit: int | None  # None: all 60,000 training images
    hidden: int = 250
    batch_size: int = 128
    lr: float = 1e-3


FULL = Plan(eta_train=ETAS, eta_inference=ETAS, train_seeds=tuple(range(8)), inference_seeds=tuple(range(20)),
            epochs=8, train_limit=None)
QUICK = Plan(eta_train=(0.0, 0.06), eta_inference=(0.0, 0.06), train_seeds=(0,), inference_seeds=(0, 1),
             epochs=1, train_limit=2000)

# two-sided 95 % Student t quantiles, df = 1..30 (used when scipy is missing)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
         2.042)


def t975(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (nan for df < 1)."""
    if df < 1:
        return math.nan
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95 % t confidence interval of the mean, n); half-width nan for n < 2."""
    v = np.asarray(values, dtype=float)
    n = v.size
    if n == 0:
        return math.nan, math.nan, 0
    if n < 2:
        return float(v.mean()), math.nan, n
    return float(v.mean()), t975(n - 1) * float(v.std(ddof=1)) / math.sqrt(n), n


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------------ model & noise

def training_config(eta_tr: float) -> aimc.AnalogConfig:
    """joshi2020 preset with additive training noise η_tr (``"none"`` for 0) and no clipping."""
    noise = "additive" if eta_tr > 0 else "none"
    return dataclasses.replace(aimc.presets.joshi2020(),
                               training=aimc.TrainingConfig(noise=noise, eta=float(eta_tr), clip="none"))


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The torch weights and biases of a converted model (no analog buffers), cloned."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if ".analog." not in k}


def plain_model(state: dict[str, torch.Tensor], hidden: int = 250) -> nn.Module:
    """A plain ``mnist_mlp`` holding ``state``, in eval mode."""
    m = aimc.models.mnist_mlp(hidden=hidden)
    m.load_state_dict(state)
    return m.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 5000) -> float:
    """Fraction of correctly classified samples (model in eval mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return correct / len(x)


@torch.no_grad()
def perturbed_copy(model: nn.Module, eta: float, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` whose Linear/Conv weights are W + η·max|W|·N (one draw, N from ``generator``).

    max|W| is taken per layer from the clean weights; biases are untouched (they are digital). With η = 0 the
    weights are unchanged exactly (W + 0).
    """
    noisy = copy.deepcopy(model)
    for m in noisy.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            w = m.weight
            n = torch.randn(w.shape, generator=generator, dtype=w.dtype, device=w.device)
            w.add_(n * (eta * w.abs().max()))
    return noisy


def inference_accuracy(model: nn.Module, eta_inf: float, seed: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """Test accuracy of one inference run: one weight-noise draw of strength ``eta_inf`` from ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    return accuracy(perturbed_copy(model, eta_inf, g), x, y)


def train_model(eta_tr: float, train_seed: int, x: torch.Tensor, y: torch.Tensor, plan: Plan):
    """Train an MLP from scratch with training weight noise ``eta_tr``.

    Initial weights and data order depend only on ``train_seed`` (identical for every η_tr); the training noise
    comes from torch's default generator, seeded from ``train_seed``.

    Returns:
        (converted model in eval mode, last-epoch mean training loss, last-epoch training accuracy of the noisy
        forward passes).
    """
    torch.manual_seed(_seed(train_seed, 1))
    model = aimc.convert(aimc.models.mnist_mlp(hidden=plan.hidden), training_config(eta_tr))
    opt = torch.optim.Adam(model.parameters(), lr=plan.lr)
    order = torch.Generator().manual_seed(_seed(train_seed, 2))
    torch.manual_seed(_seed(train_seed, 3))  # training-noise draws
    model.train()
    n = len(x)
    loss_sum = correct = 0.0
    for _ in range(plan.epochs):
        perm = torch.randperm(n, generator=order)
        loss_sum = correct = 0.0
        for i in range(0, n, plan.batch_size):
            idx = perm[i:i + plan.batch_size]
            out = model(x[idx])  # train mode: fresh weight noise in every analog layer
            loss = F.cross_entropy(out, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            aimc.clip(model)  # clip="none": a no-op, kept so the loop is the library's HWA recipe
            loss_sum += float(loss.detach()) * len(idx)
            correct += float((out.argmax(1) == y[idx]).sum())
    model.eval()
    return model, loss_sum / n, correct / n


# ------------------------------------------------------------------------------------------------ CSV store

def read_rows(path: Path) -> list[dict]:
    try:
        rows = read_csv_rows(path, COLUMNS)
    except FileFormatError as e:
        raise SystemExit(str(e)) from None
    return [{"eta_train": float(r["eta_train"]), "eta_inference": float(r["eta_inference"]),
             "train_seed": int(r["train_seed"]), "inference_seed": int(r["inference_seed"]),
             "accuracy": float(r["accuracy"])} for r in rows]


def write_rows_atomic(path: Path, rows: list[dict]) -> None:
    """Write all rows to ``path`` atomically (temporary file in the same directory, fsync, rename)."""
    write_csv_rows(path, sorted(rows, key=lambda r: (r["eta_train"], r["train_seed"], r["eta_inference"],
                                                     r["inference_seed"])), COLUMNS)


def finished_pairs(rows: list[dict], plan: Plan, path: Path) -> set[tuple[float, int]]:
    """(η_tr, training seed) pairs whose full evaluation grid is in ``rows``; refuses rows of another plan."""
    expected = {(e, s) for e in plan.eta_inference for s in plan.inference_seeds}
    grids: dict[tuple[float, int], set] = {}
    for r in rows:
        grids.setdefault((r["eta_train"], r["train_seed"]), set()).add((r["eta_inference"], r["inference_seed"]))
    for (e, s), grid in grids.items():
        if e not in plan.eta_train or s not in plan.train_seeds or grid != expected:
            raise SystemExit(f"{path} holds rows of another configuration (η_tr={e}, training seed {s}, "
                             f"{len(grid)} evaluation rows; this run expects η_tr in {list(plan.eta_train)}, seeds "
                             f"{list(plan.train_seeds)} and {len(expected)} rows each). Use another --out "
                             "directory (e.g. for --quick) or remove the file.")
    return set(grids)


# ------------------------------------------------------------------------------------------------ statistics

def per_seed_means(rows: list[dict]) -> dict[tuple[float, float, int], float]:
    """(η_tr, η_inf, training seed) -> mean accuracy over the inference seeds."""
    acc: dict[tuple[float, float, int], list[float]] = {}
    for r in rows:
        acc.setdefault((r["eta_train"], r["eta_inference"], r["train_seed"]), []).append(r["accuracy"])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def cell_stats(rows: list[dict], plan: Plan) -> dict[tuple[float, float], tuple[float, float, int]]:
    """(η_tr, η_inf) -> (mean, 95 % CI half-width over training seeds, number of training seeds)."""
    ps = per_seed_means(rows)
    out = {}
    for a in plan.eta_train:
        for b in plan.eta_inference:
            out[(a, b)] = mean_ci([ps[(a, b, s)] for s in plan.train_seeds if (a, b, s) in ps])
    return out


def paired_diff(rows: list[dict], a1: float, a2: float, b: float, seeds) -> tuple[float, float, int]:
    """Mean and 95 % CI of acc(η_tr=a1) − acc(η_tr=a2) at η_inf=b, paired by training seed."""
    ps = per_seed_means(rows)
    d = [ps[(a1, b, s)] - ps[(a2, b, s)] for s in seeds if (a1, b, s) in ps and (a2, b, s) in ps]
    return mean_ci(d)


def pct(e: float) -> str:
    return f"{100 * e:g} %"


def fmt_ci(m: float, h: float, scale: float = 100.0, digits: int = 2) -> str:
    if math.isnan(h):
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} ± {scale * h:.{digits}f}"


def summary_markdown(rows: list[dict], plan: Plan) -> str:
    """Mean test accuracy (%) table, η_tr rows × η_inf columns, ± 95 % CI over training seeds."""
    st = cell_stats(rows, plan)
    head = "| η_tr \\ η_inf | " + " | ".join(pct(b) for b in plan.eta_inference) + " | digital (no noise) |"
    lines = [head, "|" + "---|" * (len(plan.eta_inference) + 2)]
    for a in plan.eta_train:
        cells = [fmt_ci(*st[(a, b)][:2]) if st[(a, b)][2] else "–" for b in plan.eta_inference]
        digital = fmt_ci(*st[(a, 0.0)][:2]) if (a, 0.0) in st and st[(a, 0.0)][2] else "–"
        lines.append(f"| {pct(a)} | " + " | ".join(cells) + f" | {digital} |")
    return "\n".join(lines)


def findings_markdown(rows: list[dict], plan: Plan) -> str:
    """The numbers behind the two questions: best η_tr per η_inf, paired differences, digital accuracy."""
    st = cell_stats(rows, plan)
    seeds = plan.train_seeds
    out = ["(1) best η_tr per η_inf; differences paired by training seed (pp, mean ± 95 % CI):", "",
           "| η_inf | best η_tr | its accuracy | best − matched (η_tr = η_inf) | next-above − matched | "
           "η_tr within CI of best |",
           "|---|---|---|---|---|---|"]
    for b in plan.eta_inference:
        done = [a for a in plan.eta_train if st[(a, b)][2]]
        if not done:
            continue
        best = max(done, key=lambda a: st[(a, b)][0])
        matched = b if b in done else None
        above = [a for a in done if a > b]
        nxt = min(above) if above else None
        d_best = paired_diff(rows, best, matched, b, seeds) if matched is not None else (math.nan,) * 3
        d_next = paired_diff(rows, nxt, matched, b, seeds) if nxt is not None and matched is not None \
            else (math.nan,) * 3
        tied = []
        for a in done:
            m, h, n = paired_diff(rows, a, best, b, seeds)
            if a == best or (n >= 2 and m + h >= 0):
                tied.append(pct(a))
        out.append(f"| {pct(b)} | {pct(best)} | {fmt_ci(*st[(best, b)][:2])} | "
                   f"{fmt_ci(*d_best[:2]) if best != matched else '0 (is matched)'} | "
                   f"{fmt_ci(*d_next[:2]) if nxt is not None else '–'} | {', '.join(tied)} |")
    out += ["", "(2) digital accuracy (η_inf = 0) minus that of η_tr = 0, paired by training seed (pp):", ""]
    for a in plan.eta_train:
        if a == 0.0 or not st[(a, 0.0)][2] or not st[(0.0, 0.0)][2]:
            continue
        m, h, n = paired_diff(rows, a, 0.0, 0.0, seeds)
        out.append(f"- η_tr = {pct(a)}: digital {fmt_ci(*st[(a, 0.0)][:2])} %, difference {fmt_ci(m, h)} pp "
                   f"(n = {n})")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ figures

def plot_heatmap(rows: list[dict], plan: Plan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = cell_stats(rows, plan)
    a_list, b_list = plan.eta_train, plan.eta_inference
    z = np.array([[100 * st[(a, b)][0] for b in b_list] for a in a_list])
    fig, ax = plt.subplots(figsize=(max(1.1 * len(b_list) + 2.5, 6.5), 0.62 * len(a_list) + 1.8))
    im = ax.imshow(z, cmap="viridis", aspect="auto", origin="upper")
    lo, hi = np.nanmin(z), np.nanmax(z)
    for i in range(len(a_list)):
        for j in range(len(b_list)):
            if np.isfinite(z[i, j]):
                light = (z[i, j] - lo) / (hi - lo + 1e-12) > 0.6
                ax.text(j, i, f"{z[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="black" if light else "white")
    # mark the best η_tr of each η_inf column
    for j in range(len(b_list)):
        col = z[:, j]
        if np.isfinite(col).any():
            i = int(np.nanargmax(col))
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(len(b_list)), [f"{100 * b:g}" for b in b_list])
    ax.set_yticks(range(len(a_list)), [f"{100 * a:g}" for a in a_list])
    ax.set_xlabel("inference weight noise η_inf (% of max|W|)")
    ax.set_ylabel("training weight noise η_tr (% of max|W|)")
    ax.set_title(f"MNIST MLP 784-250-10: mean test accuracy (%)\n{len(plan.train_seeds)} training × "
                 f"{len(plan.inference_seeds)} inference seeds per cell; red = best η_tr per column", fontsize=10)
    fig.colorbar(im, ax=ax, label="test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_lines(rows: list[dict], plan: Plan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = cell_stats(rows, plan)
    xs = np.array([100 * b for b in plan.eta_inference])
    colors = plt.cm.plasma(np.linspace(0, 0.9, len(plan.eta_train)))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    lows: list[float] = []
    for a, c in zip(plan.eta_train, colors):
        m = np.array([100 * st[(a, b)][0] for b in plan.eta_inference])
        h = np.array([100 * st[(a, b)][1] for b in plan.eta_inference])
        ax1.errorbar(xs, m, yerr=np.where(np.isfinite(h), h, 0), color=c, marker="o", ms=4, capsize=3,
                     label=f"η_tr = {100 * a:g} %")
        # paired difference to the model trained at the matched noise η_tr = η_inf (where η_inf is in the grid)
        dm, dh, dx = [], [], []
        for b in plan.eta_inference:
            if b in plan.eta_train:
                mm, hh, n = paired_diff(rows, a, b, b, plan.train_seeds)
                if n:
                    dx.append(100 * b)
                    dm.append(100 * mm)
                    dh.append(100 * hh if np.isfinite(hh) else 0.0)
        lows += [u - v for u, v in zip(dm, dh)]
        ax2.errorbar(np.array(dx) + 0.06 * (list(plan.eta_train).index(a) - len(plan.eta_train) / 2), dm,
                     yerr=dh, color=c, marker="o", ms=4, capsize=3, label=f"η_tr = {100 * a:g} %")
    ax1.set_xlabel("inference weight noise η_inf (%)")
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title("accuracy vs inference noise (95 % CI over training seeds)", fontsize=10)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.axhline(0, color="gray", lw=1)
    ax2.set_xlabel("inference weight noise η_inf (%)")
    ax2.set_ylabel("accuracy − accuracy of η_tr = η_inf model (pp)")
    ax2.set_title("relative to training at the matched noise (paired by training seed, 95 % CI)", fontsize=10)
    if lows:
        ax2.set_ylim(bottom=max(min(lows) - 0.05, -2.5))
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main

def _fmt_time(s: float) -> str:
    return f"{int(s // 60)}m{s % 60:04.1f}s"


def main(argv: list[str] | None = None) -> dict:
    """Run (or resume) the study and draw the figures. Returns paths, the run's digital accuracies and timing."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/results", help="output directory (default docs/results)")
    p.add_argument("--quick", action="store_true",
                   help="tiny run for tests: 2 η values, 1 training seed, 2 inference seeds, 1 epoch, 2000 images")
    p.add_argument("--keep-models", action="store_true",
                   help=f"save each trained model's state_dict (safetensors) in OUT/{MODELS_DIR}/")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    plan = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / CSV_NAME
    t0 = time.perf_counter()

    rows = read_rows(csv_path)
    done = finished_pairs(rows, plan, csv_path)
    todo = [(a, s) for s in plan.train_seeds for a in plan.eta_train if (a, s) not in done]
    print(f"noise-injection study: η_tr × η_inf = {[pct(a) for a in plan.eta_train]} × "
          f"{[pct(b) for b in plan.eta_inference]}, {len(plan.train_seeds)} training seeds × "
          f"{len(plan.inference_seeds)} inference seeds, {plan.epochs} epoch(s); "
          f"{len(done)} model(s) already in {csv_path}, {len(todo)} to train", flush=True)

    digital: dict[tuple[float, int], float] = {}
    if todo:
        x_tr, y_tr = aimc.data.mnist("train", limit=plan.train_limit).tensors
        x_te, y_te = aimc.data.mnist("test").tensors
        print(f"data: {len(x_tr)} training images, {len(x_te)} test images", flush=True)
        t_loop = time.perf_counter()
        for k, (a, s) in enumerate(todo, 1):
            t1 = time.perf_counter()
            model, loss, train_acc = train_model(a, s, x_tr, y_tr, plan)
            t_train = time.perf_counter() - t1
            dig = accuracy(model, x_te, y_te)  # converted model, eval mode, not programmed: digital weights
            digital[(a, s)] = dig
            state = plain_state(model)
            clean = plain_model(state, plan.hidden)
            new = []
            for b in plan.eta_inference:
                zero_acc = None
                for r in plan.inference_seeds:
                    if b == 0.0 and zero_acc is not None:
                        acc = zero_acc  # no noise: every inference seed gives the same weights
                    else:
                        acc = inference_accuracy(clean, b, _seed(s, r, 4), x_te, y_te)
                        if b == 0.0:
                            zero_acc = acc
                            if acc != dig:
                                raise RuntimeError(f"η_inf = 0 accuracy {acc} differs from the digital {dig}")
                    new.append({"eta_train": a, "eta_inference": b, "train_seed": s, "inference_seed": r,
                                "accuracy": acc})
            if args.keep_models:
                from safetensors.torch import save_file

                mdir = out / MODELS_DIR
                mdir.mkdir(exist_ok=True)
                save_file(state, str(mdir / f"eta_train{a:g}_seed{s}.safetensors"))
            rows = rows + new
            write_rows_atomic(csv_path, rows)
            el = time.perf_counter() - t_loop
            noisy = [n["accuracy"] for n in new if n["eta_inference"] == max(plan.eta_inference)]
            print(f"[{k:>3}/{len(todo)}] η_tr={pct(a):>6} seed {s}: trained in {t_train:5.1f} s (last epoch: loss "
                  f"{loss:.4f}, noisy-forward train acc {100 * train_acc:.2f} %), digital test acc {100 * dig:.2f} %, "
                  f"at η_inf={pct(max(plan.eta_inference))} {100 * np.mean(noisy):.2f} %; "
                  f"elapsed {_fmt_time(el)}, ETA {_fmt_time(el / k * (len(todo) - k))}", flush=True)

    rows = read_rows(csv_path)
    plot_heatmap(rows, plan, out / HEATMAP_NAME)
    plot_lines(rows, plan, out / LINES_NAME)
    wall = time.perf_counter() - t0
    print("\nMean test accuracy (%) ± 95 % CI over training seeds (each seed averaged over the inference seeds):")
    print(summary_markdown(rows, plan))
    print()
    print(findings_markdown(rows, plan))
    print(f"\nwrote {csv_path} ({len(rows)} rows), {out / HEATMAP_NAME}, {out / LINES_NAME}; "
          f"wall time {_fmt_time(wall)}", flush=True)
    return {"csv": csv_path, "heatmap": out / HEATMAP_NAME, "lines": out / LINES_NAME, "digital": digital,
            "trained": len(todo), "rows": len(rows), "wall_seconds": wall, "plan": plan}


if __name__ == "__main__":
    main(sys.argv[1:])
