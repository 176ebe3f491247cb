"""``aimc demo``: the whole Joshi et al. 2020 loop on scikit-learn's bundled digits, in a few minutes on a CPU.

Trains a small CNN with batch norm in floating point, fine-tunes a copy hardware-aware (noise η = 3.8 %, clipping
α = 2), programs both onto simulated PCM (``joshi2020`` preset), and measures accuracy from 25 s to one year after
programming over several seeds, without compensation, with GDC, and with GDC + BN re-estimation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from aimc import presets
from aimc.evaluation import accuracy, evaluate, plot_summary, summarize, summary_markdown
from aimc.nn.convert import convert
from aimc.train.loop import fit

__all__ = ["run_demo", "DemoSettings", "TIMES"]

TIMES = (25.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0)


@dataclass(frozen=True)
class DemoSettings:
    """Budget of the demo. ``quick()`` is the one the tests use."""

    fp_epochs: int = 30
    hwa_epochs: int = 15
    seeds: int = 10
    times: tuple[float, ...] = TIMES
    n_calib: int = 512

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(fp_epochs=4, hwa_epochs=2, seeds=2, times=(25.0, 86400.0), n_calib=128)


def _loader(ds, *, shuffle: bool, seed: int = 0, batch_size: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None)


def run_demo(out: str | Path = "aimc-demo", settings: DemoSettings | None = None, *, progress: bool = True,
             log=print, threads: int = 1) -> pd.DataFrame:  # noqa: ANN001
    """Run the demo and write ``results.csv``, ``summary.md`` and ``accuracy_vs_time.png`` into ``out``.

    Args:
        threads: torch threads while the demo runs (restored after); 0 = torch's default (all cores). One is fastest
            for this tiny CNN and immune to a busy machine.

    Returns:
        The summary table (mean, std, 95 % CI per model, compensation and time).
    """
    s = settings or DemoSettings()
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(out, s, progress, log)
    finally:
        torch.set_num_threads(before)


def _run(out: str | Path, s: DemoSettings, progress: bool, log) -> pd.DataFrame:  # noqa: ANN001
    from aimc.data import digits
    from aimc.models import digits_cnn

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    torch.manual_seed(0)
    train_ds, test_ds = digits("train"), digits("test")
    train, test = _loader(train_ds, shuffle=True), _loader(test_ds, shuffle=False, batch_size=512)
    calib = _loader(train_ds, shuffle=True, seed=1, batch_size=128)

    model = digits_cnn()
    fit(model, train, epochs=s.fp_epochs, lr=3e-3)
    fp_acc = accuracy(model, test)
    log(f"floating-point CNN: test accuracy {100 * fp_acc:.2f} % ({s.fp_epochs} epochs)")

    cfg = presets.joshi2020()
    fp_direct = convert(model, cfg)
    hwa = convert(model, cfg)
    torch.manual_seed(1)
    fit(hwa, train, epochs=s.hwa_epochs, lr=1e-3)
    hwa_acc = accuracy(hwa, test)
    log(f"hardware-aware fine-tune (eta {cfg.training.eta}, clip {cfg.training.clip_alpha} sigma): "
        f"digital test accuracy {100 * hwa_acc:.2f} % ({s.hwa_epochs} epochs)")

    tables = [pd.DataFrame([{"model": "fp_digital", "compensation": "none", "t_seconds": 0.0, "seed": 0,
                             "accuracy": fp_acc}])]
    for name, m in (("fp_direct", fp_direct), ("hwa", hwa)):
        res = evaluate(m, test, s.times, range(s.seeds), ("none", "gdc", "gdc+bn"), calib=calib,
                       n_calib=s.n_calib, name=name, progress=progress)
        tables.append(res.table)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "results.csv", index=False)
    summ = summarize(table, ("model", "compensation", "t_seconds"))
    plot_summary(summ[summ["model"] != "fp_digital"], out / "accuracy_vs_time.png",
                 title=f"digits CNN on PCM (joshi2020), {s.seeds} seeds; FP {100 * fp_acc:.1f} %")
    md = summary_markdown(summ)
    wall = time.perf_counter() - t_start
    (out / "summary.md").write_text(
        "# aimc demo: digits CNN on simulated PCM\n\n"
        f"Floating-point test accuracy {100 * fp_acc:.2f} %; hardware-aware (digital) {100 * hwa_acc:.2f} %. "
        f"Preset `joshi2020`; {s.seeds} seeds; test set {len(test_ds)} images; BN re-estimation on "
        f"{s.n_calib} unlabeled training images. Wall time {wall:.0f} s.\n\n" + md + "\n")
    log(f"wrote {out / 'results.csv'}, {out / 'summary.md'}, {out / 'accuracy_vs_time.png'} in {wall:.0f} s")
    return summ
