"""A small GAN on MNIST trained with mixed-precision PCM synapses vs floating point (experiment ``gan``).

Generator 64 → 256 → 784 (LeakyReLU 0.2, tanh) and discriminator 784 → 256 → 1 (LeakyReLU 0.2), all four weight
matrices analog for ``mixed_precision`` (one ``MixedPrecision`` optimizer per network, default device), biases
digital; ``fp`` uses ``torch.optim.SGD`` with the same learning rate, schedule, batches, initial weights and noise
draws. Loss: the non-saturating GAN loss (binary cross-entropy on logits). Images are scaled to [−1, 1].

Quality of 10,000 generated digits, measured with a digital MNIST classifier (``mnist_mlp``, trained here on the
training set for 3 epochs with a fixed seed; it is the same for both methods):

* ``classifier_score``: exp(E_x KL(p(y|x) ‖ p(y))) (the Inception Score with this classifier; 1 = useless, 10 =
  confident and all classes equally often);
* ``classifier_fid``: Fréchet distance between the classifier's 250 hidden features of the generated digits and
  of the 10,000 test digits (0 = same feature mean and covariance; lower is better);
* ``real_classifier_score`` / ``real_classifier_fid``: the same for the test digits themselves (reference).

Usage (from the repository root)::

    .venv/bin/python examples/mixed_precision/gan.py                 # rows of experiment "gan" into the CSV
    .venv/bin/python examples/mixed_precision/gan.py --quick --out /tmp/mp

Resumable like ``run_experiments.py`` (same CSV, same columns).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aimc  # noqa: E402
import aimc.data  # noqa: E402
import aimc.models  # noqa: E402
from aimc.train import MixedPrecision  # noqa: E402
from run_experiments import CSV_NAME, _seed, analog_config, read_rows, write_rows_atomic  # noqa: E402

Z = 64
EPOCHS, LR, BATCH = 10, 0.1, 64


def generator() -> nn.Module:
    return nn.Sequential(nn.Linear(Z, 256), nn.LeakyReLU(0.2), nn.Linear(256, 784), nn.Tanh())


def discriminator() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1))


def to_pm1(x: torch.Tensor) -> torch.Tensor:
    """aimc.data.mnist's normalised images (N, 1, 28, 28) → flat pixels in [−1, 1]."""
    return ((x * aimc.data.MNIST_STD + aimc.data.MNIST_MEAN) * 2 - 1).reshape(len(x), -1)


def from_pm1(x: torch.Tensor) -> torch.Tensor:
    """Flat [−1, 1] pixels → the classifier's normalised (N, 1, 28, 28) input."""
    return (((x + 1) / 2 - aimc.data.MNIST_MEAN) / aimc.data.MNIST_STD).reshape(len(x), 1, 28, 28)


def train_classifier(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    torch.manual_seed(1234)
    clf = aimc.models.mnist_mlp()
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1234)
    for _ in range(3):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(clf(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return clf.eval()


@torch.no_grad()
def features(clf: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden features (N, 250), class probabilities (N, 10)) of normalised images."""
    h = clf[2](clf[1](clf[0](x)))
    return h, F.softmax(clf[3](h), dim=1)


def quality(clf: nn.Module, x: torch.Tensor, ref_feat: torch.Tensor) -> tuple[float, float]:
    """(classifier score, Fréchet distance of the classifier features to ``ref_feat``)."""
    from scipy import linalg

    h, p = features(clf, x)
    py = p.mean(0, keepdim=True)
    score = float(torch.exp((p * (torch.log(p + 1e-12) - torch.log(py + 1e-12))).sum(1).mean()))
    a, b = h.double().numpy(), ref_feat.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    eye = 1e-6 * np.eye(a.shape[1])  # dead ReLU features make the covariances singular
    ca, cb = np.cov(a, rowvar=False) + eye, np.cov(b, rowvar=False) + eye
    covmean = linalg.sqrtm(ca @ cb).real
    fid = float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * covmean))
    return score, fid


def run(method: str, seed: int, x_real: torch.Tensor, epochs: int, log=print,
        lr: float = LR) -> tuple[nn.Module, list]:
    torch.manual_seed(_seed(seed, 11))
    gen, dis = generator(), discriminator()
    if method == "fp":
        opt_g, opt_d = (torch.optim.SGD(m.parameters(), lr=lr) for m in (gen, dis))
    else:
        gen, dis = aimc.convert(gen, analog_config()), aimc.convert(dis, analog_config())
        opt_g = MixedPrecision(gen, lr=lr, seed=_seed(seed, 12))
        opt_d = MixedPrecision(dis, lr=lr, seed=_seed(seed, 13))
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs) for o in (opt_g, opt_d)]
    order, noise = torch.Generator().manual_seed(_seed(seed, 14)), torch.Generator().manual_seed(_seed(seed, 15))
    gen.train()
    dis.train()
    t0 = time.perf_counter()
    rows: list[tuple[str, float]] = []
    for ep in range(epochs):
        perm = torch.randperm(len(x_real), generator=order)
        ld = lg = 0.0
        for i in range(0, len(x_real), BATCH):
            real = x_real[perm[i:i + BATCH]]
            n = len(real)
            fake = gen(torch.randn(n, Z, generator=noise))
            d_loss = (F.binary_cross_entropy_with_logits(dis(real), torch.ones(n, 1))
                      + F.binary_cross_entropy_with_logits(dis(fake.detach()), torch.zeros(n, 1)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            g_loss = F.binary_cross_entropy_with_logits(dis(fake), torch.ones(n, 1))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            ld += float(d_loss.detach()) * n
            lg += float(g_loss.detach()) * n
        for s in scheds:
            s.step()
        rows += [(f"epoch{ep + 1}/d_loss", ld / len(x_real)), (f"epoch{ep + 1}/g_loss", lg / len(x_real))]
        msg = f"  [gan {method} seed {seed}] epoch {ep + 1}/{epochs}: D {ld / len(x_real):.3f}, " \
              f"G {lg / len(x_real):.3f} ({time.perf_counter() - t0:.0f} s)"
        if method != "fp":
            rep_g, rep_d = opt_g.epoch_report(), opt_d.epoch_report()
            rows += [(f"epoch{ep + 1}/pulses", rep_g.pulses + rep_d.pulses),
                     (f"epoch{ep + 1}/refreshes", rep_g.refreshes + rep_d.refreshes)]
            msg += f"; G: {rep_g.pulses:,} pulses, D: {rep_d.pulses:,} pulses"
        log(msg)
    rows.append(("wall_seconds", time.perf_counter() - t0))
    rows.append(("epochs", epochs))
    if method != "fp":
        w = opt_g.totals.weights + opt_d.totals.weights
        rows += [("analog_weights", w), ("pulses_per_epoch", (opt_g.totals.pulses + opt_d.totals.pulses) / epochs),
                 ("pulses_per_weight_per_epoch", (opt_g.totals.pulses + opt_d.totals.pulses) / w / epochs),
                 ("refreshes_per_epoch", (opt_g.totals.refreshes + opt_d.totals.refreshes) / epochs)]
    gen.eval()
    return gen, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/results"))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2000 images, 1 epoch")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("command:", " ".join([sys.executable, *sys.argv]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / CSV_NAME
    tr = aimc.data.mnist("train", limit=2000 if args.quick else None)
    te = aimc.data.mnist("test", limit=1000 if args.quick else None)
    clf = train_classifier(*tr.tensors)
    ref_feat, _ = features(clf, te.tensors[0])
    x_real = to_pm1(tr.tensors[0])
    n_gen = 1000 if args.quick else 10_000
    real_score, real_fid = quality(clf, te.tensors[0], ref_feat)
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in ("fp", "mixed_precision"):
            if any(r["experiment"] == "gan" and r["method"] == method and int(r["seed"]) == seed
                   and r["metric"] == "classifier_score" for r in read_rows(path)):
                print(f"skip gan {method} seed {seed}: already in {path}", flush=True)
                continue
            gen, rows = run(method, seed, x_real, 1 if args.quick else EPOCHS, log=lambda m: print(m, flush=True))
            with torch.no_grad():
                z = torch.randn(n_gen, Z, generator=torch.Generator().manual_seed(_seed(seed, 16)))
                score, fid = quality(clf, from_pm1(gen(z)), ref_feat)
            rows += [("classifier_score", score), ("classifier_fid", fid), ("real_classifier_score", real_score),
                     ("real_classifier_fid", real_fid)]
            if seed == 0:
                save_grid(gen, args.out / f"mixed_precision_gan_{method}.png", method)
            old = [r for r in read_rows(path) if not (r["experiment"] == "gan" and r["method"] == method
                                                      and int(r["seed"]) == seed)]
            write_rows_atomic(path, old + [{"experiment": "gan", "method": method, "seed": seed, "metric": k,
                                            "value": repr(float(v))} for k, v in rows])
            print(f"done gan {method} seed {seed}: classifier score {score:.2f} (real {real_score:.2f}), "
                  f"classifier FID {fid:.2f}, {dict(rows)['wall_seconds']:.0f} s", flush=True)
    return 0


@torch.no_grad()
def save_grid(gen: nn.Module, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = torch.randn(64, Z, generator=torch.Generator().manual_seed(99))
    img = ((gen(z) + 1) / 2).reshape(8, 8, 28, 28).permute(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
    plt.figure(figsize=(4, 4))
    plt.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
    plt.axis("off")
    plt.title(f"GAN samples: {title}", fontsize=9)
    plt.tight_layout()
    plt.savefig(path, dpi=100)
    plt.close()


if __name__ == "__main__":
    raise SystemExit(main())
