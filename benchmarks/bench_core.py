"""Core cost of aimc on ResNet-32 (CIFAR-10 size), measured against plain PyTorch in the same run.

Measures (all wall-clock, ``time.perf_counter``, 2 warm-up iterations, median of N; every timed call is paired
with a plain-PyTorch call right next to it, order alternating, so background load hits both alike):

Verdicts use the median of per-pair ratios (each analog timing divided by the plain timing taken right next
to it); the ratio of the two medians is printed alongside.

1. inference forward, batch 128, ``torch.inference_mode``: plain model vs converted + programmed + drifted
   model with ``joshi2020`` (target ≤ 1.15×) and ``aihwkit_default`` (target ≤ 2.5×);
2. ``aimc.at_time(model, 86400.0, seed=0)`` (both presets) vs one plain forward of the same batch
   (target: well under one forward, here ≤ 0.5×), and ``aimc.program``;
3. hardware-aware training step (forward + backward + SGD step + ``aimc.clip``, train mode, ``joshi2020``)
   vs the plain training step of the same model (target ≤ 1.25×);
4. memory: device-state bytes and cached-weight bytes per weight (``aimc.inference.device_state_bytes``).

Usage::

    .venv/bin/python benchmarks/bench_core.py            # full run (batch 128, N = 10)
    .venv/bin/python benchmarks/bench_core.py --quick    # smoke test (batch 16, N = 3)

Always exits 0; PASS/MISS lines report the targets.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import aimc
from aimc.inference import device_state_bytes
from aimc.models import resnet32_cifar

TARGET_FWD = {"joshi2020": 1.15, "aihwkit_default": 2.5}
TARGET_AT_TIME = 0.5  # "well under one forward": at_time ≤ 0.5 × plain forward of the same batch
TARGET_TRAIN = 1.25


def header(args: argparse.Namespace | None = None, *, settings: str | None = None, machine_extra: str = "",
           width: int = 78) -> None:
    """The script, command, machine, load average and settings (default: bench_core's batch/warm-up/repeats)."""
    if settings is None:
        settings = (f"batch {args.batch}, warm-up {args.warmup}, repeats N = {args.repeats}"
                    + (" (--quick)" if args.quick else ""))
    print("=" * width)
    print("aimc benchmark:", os.path.basename(sys.argv[0]))
    print("command :", shlex.join([sys.executable, *sys.argv]))
    print(f"machine : torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"os.cpu_count() {os.cpu_count()}, python {platform.python_version()}, {platform.machine()}, "
          f"aimc {aimc.__version__}{machine_extra}")
    try:
        print("load avg: %.2f %.2f %.2f (1/5/15 min, at start)" % os.getloadavg())
    except OSError:
        pass
    print(f"settings: {settings}")
    print("=" * width)


def footer(t_start: float) -> None:
    """Load average at the end and the script's wall time since ``t_start`` (``time.perf_counter``)."""
    try:
        print("\nload avg: %.2f %.2f %.2f (1/5/15 min, at end)" % os.getloadavg())
    except OSError:
        pass
    print(f"total wall time {time.perf_counter() - t_start:.1f} s")


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def paired(base: Callable[[], object], fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
           budget_s: float | None = None) -> tuple[list[float], dict[str, list[float]], dict[str, list[float]]]:
    """Time each function against the baseline right next to it: per round and function one (base, fn) pair,
    order alternating (base first on even rounds, fn first on odd ones), so background load hits both alike.

    Returns (baseline times, {name: times}, {name: per-pair ratios fn/base}). A function whose warm-up shows it
    would overrun ``budget_s`` over all rounds gets fewer rounds (≥ 3); the sample count is printed.
    """
    first: dict[str, float] = {}
    for _ in range(warmup):
        timed(base)
        for n, f in fns.items():
            first[n] = timed(f)
    limit = {n: repeats for n in fns}
    if budget_s is not None:
        for n in fns:
            if first[n] * repeats > budget_s:
                limit[n] = max(3, int(budget_s / max(first[n], 1e-9)))
    tb: list[float] = []
    tf: dict[str, list[float]] = {n: [] for n in fns}
    ratio: dict[str, list[float]] = {n: [] for n in fns}
    for r in range(repeats):
        for n, f in fns.items():
            if len(tf[n]) >= limit[n]:
                continue
            if r % 2 == 0:
                b, x = timed(base), timed(f)
            else:
                x, b = timed(f), timed(base)
            tb.append(b)
            tf[n].append(x)
            ratio[n].append(x / b)
    return tb, tf, ratio


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_t(s: float) -> str:
    return f"{s * 1e3:9.1f} ms" if s < 10 else f"{s:9.2f} s "


def verdict(ratio: float, target: float) -> str:
    return "PASS" if ratio <= target else "MISS"


def analog_model(base: nn.Module, preset: str) -> nn.Module:
    a = aimc.convert(base, aimc.presets.get(preset))
    a.eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 86400.0, seed=0)
    return a


def bench_forward(base: nn.Module, analog: dict[str, nn.Module], x: torch.Tensor, args) -> dict[str, float]:
    print(f"\n[1] inference forward, input {tuple(x.shape)}, torch.inference_mode, t = 1 day after programming")
    fns: dict[str, Callable[[], object]] = {p: (lambda m=m: m(x)) for p, m in analog.items()}
    with torch.inference_mode():
        tb, tf, ratio = paired(lambda: base(x), fns, args.warmup, args.repeats, budget_s=args.budget)
    plain = med(tb)
    print(f"  {'model':<18}{'median':>12}{'n':>4}{'ratio of medians':>18}{'median pair ratio':>19}"
          f"{'target':>8}  verdict")
    print(f"  {'plain PyTorch':<18}{fmt_t(plain)}{len(tb):>4}{1.0:>17.2f}x")
    meds = {"plain": plain}
    for p in analog:
        m = med(tf[p])
        meds[p] = m
        r = med(ratio[p])
        print(f"  {p:<18}{fmt_t(m)}{len(tf[p]):>4}{m / plain:>17.2f}x{r:>18.2f}x{TARGET_FWD[p]:>7.2f}x  "
              f"{verdict(r, TARGET_FWD[p])}")
    return meds


def bench_time_program(base: nn.Module, analog: dict[str, nn.Module], x: torch.Tensor, args) -> None:
    print("\n[2] aimc.at_time(model, 86400.0, seed=0) and aimc.program(model, seed=0) vs one plain forward "
          f"(batch {x.shape[0]})")

    def fwd() -> None:
        with torch.inference_mode():
            base(x)

    fns: dict[str, Callable[[], object]] = {}
    for p, m in analog.items():
        fns[f"at_time  {p}"] = (lambda m=m: aimc.at_time(m, 86400.0, seed=0))
    for p, m in analog.items():
        # program resets the time; the at_time after the loop makes the models usable again (not timed)
        fns[f"program  {p}"] = (lambda m=m: aimc.program(m, seed=0))
    tb, tf, ratio = paired(fwd, fns, args.warmup, args.repeats)
    for m in analog.values():
        aimc.at_time(m, 86400.0, seed=0)
    plain = med(tb)
    if x.shape[0] != 128:
        print(f"  (the at_time target is defined against a batch-128 forward; this run uses batch {x.shape[0]})")
    print(f"  {'operation':<26}{'median':>12}{'n':>4}{'median pair ratio':>19}{'target':>8}  verdict")
    print(f"  {'plain forward':<26}{fmt_t(plain)}{len(tb):>4}{1.0:>18.3f}x")
    for n, ts in tf.items():
        r = med(ratio[n])
        line = f"  {n:<26}{fmt_t(med(ts))}{len(ts):>4}{r:>18.3f}x"
        if n.startswith("at_time"):
            line += f"{TARGET_AT_TIME:>7.2f}x  {verdict(r, TARGET_AT_TIME)}"
        print(line)


def bench_train(args) -> None:
    b = args.batch
    print(f"\n[3] training step: forward + backward + SGD(lr 0.01, momentum 0.9) step, batch {b}, train mode")
    torch.manual_seed(1)
    plain = resnet32_cifar()
    hwa = aimc.convert(plain, aimc.presets.joshi2020())
    plain.train()
    hwa.train()
    x = torch.randn(b, 3, 32, 32)
    y = torch.randint(0, 10, (b,))
    loss_fn = nn.CrossEntropyLoss()
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
    opt_h = torch.optim.SGD(hwa.parameters(), lr=0.01, momentum=0.9)

    def step_plain() -> None:
        opt_p.zero_grad(set_to_none=True)
        loss_fn(plain(x), y).backward()
        opt_p.step()

    def step_hwa() -> None:
        opt_h.zero_grad(set_to_none=True)
        loss_fn(hwa(x), y).backward()
        opt_h.step()
        aimc.clip(hwa)

    tb, tf, ratio = paired(step_plain, {"hwa": step_hwa}, args.warmup, args.repeats)
    mp, mh, r = med(tb), med(tf["hwa"]), med(ratio["hwa"])
    print(f"  {'step':<36}{'median':>12}{'n':>4}{'ratio of medians':>18}{'median pair ratio':>19}{'target':>8}"
          "  verdict")
    print(f"  {'plain PyTorch':<36}{fmt_t(mp)}{len(tb):>4}{1.0:>17.2f}x")
    print(f"  {'HWA joshi2020 (noise + aimc.clip)':<36}{fmt_t(mh)}{len(tf['hwa']):>4}{mh / mp:>17.2f}x{r:>18.2f}x"
          f"{TARGET_TRAIN:>7.2f}x  {verdict(r, TARGET_TRAIN)}")


def bench_memory(base: nn.Module, analog: dict[str, nn.Module]) -> None:
    n_params = sum(p.numel() for p in base.parameters())
    print(f"\n[4] memory per analog weight (plain float32 weight = 4 B; model has {n_params:,} parameters)")
    print(f"  {'preset':<18}{'weights':>10}{'state B/w':>11}{'cache B/w':>11}{'state MB':>10}{'cache MB':>10}"
          f"{'(state+cache)/fp32':>20}")
    for p, m in analog.items():
        d = device_state_bytes(m)
        w = d["weights"]
        s, c = d["state_bytes_per_weight"], d["cache_bytes_per_weight"]
        print(f"  {p:<18}{int(w):>10,}{s:>11.1f}{c:>11.1f}{s * w / 2**20:>10.2f}{c * w / 2**20:>10.2f}"
              f"{(s + c) / 4:>19.1f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 16, 3 repeats")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 128, --quick 16)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats N (default 10, --quick 3)")
    ap.add_argument("--budget", type=float, default=75.0,
                    help="seconds allowed per slow forward series; fewer repeats (≥ 3) above it (default 75)")
    args = ap.parse_args()
    args.batch = args.batch or (16 if args.quick else 128)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.warmup = 2
    t_start = time.perf_counter()
    header(args)

    torch.manual_seed(0)
    base = resnet32_cifar().eval()
    x = torch.randn(args.batch, 3, 32, 32)
    analog = {p: analog_model(base, p) for p in ("joshi2020", "aihwkit_default")}

    bench_forward(base, analog, x, args)
    bench_time_program(base, analog, x, args)
    bench_train(args)
    bench_memory(base, analog)
    footer(t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
