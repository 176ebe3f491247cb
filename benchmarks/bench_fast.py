"""Evaluation speed, measured against plain PyTorch in the same run (issue "Fast and big").

1. forward overhead of a programmed + drifted model vs the plain model, ideal periphery (``joshi2020``) and
   ``aihwkit_default``, for ResNet-32 (CIFAR-10 shape) and ResNet-34 (ImageNet shape, random data);
2. ``aimc.at_time`` (drift + read noise + GDC read-out of every tile) vs one plain forward of the same batch;
3. multi-seed batching: S seeds' drifted weights evaluated in one ``torch.func.vmap`` pass vs S separate forwards
   (the only way to batch seeds without changing the model; aimc keeps it only if it is faster);
4. ``torch.compile`` gain on an analog model (compile time reported separately);
5. channels-last memory format gain on the plain model (aimc's static-range convolutions are plain convolutions).

Timings are paired with a plain-PyTorch call right next to them, order alternating (see bench_core.py); verdicts
use the median of per-pair ratios. One torch thread.

    .venv/bin/python benchmarks/bench_fast.py            # full run (~10 min)
    .venv/bin/python benchmarks/bench_fast.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, vmap

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import analog_model, fmt_t, header, med, paired, timed  # noqa: E402

import aimc  # noqa: E402
from aimc.models import resnet32_cifar, resnet34_imagenet  # noqa: E402


def nets(args: argparse.Namespace) -> list[tuple[str, nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    out = [("ResNet-32 (CIFAR)", resnet32_cifar().eval(), torch.randn(args.batch, 3, 32, 32))]
    if not args.quick:
        out.append(("ResNet-34 (ImageNet)", resnet34_imagenet().eval(), torch.randn(args.batch34, 3, 224, 224)))
    return out


def forward_and_drift(args: argparse.Namespace) -> None:
    print("\n[1] forward overhead (programmed, t = 1 day, GDC) and [2] aimc.at_time, both vs one plain forward")
    print(f"  {'network':<22}{'input':<20}{'plain fwd':>12}{'joshi2020':>11}{'aihwkit_def':>12}"
          f"{'at_time j2020':>15}{'at_time aihw':>14}")
    for name, base, x in nets(args):
        analog = {p: analog_model(base, p) for p in ("joshi2020", "aihwkit_default")}
        fns = {p: (lambda m=m: m(x)) for p, m in analog.items()}
        fns.update({f"t_{p}": (lambda m=m: aimc.at_time(m, 86400.0, seed=0)) for p, m in analog.items()})
        with torch.inference_mode():
            tb, _, ratio = paired(lambda: base(x), fns, 1, args.repeats, budget_s=args.budget)
        r = {k: med(v) for k, v in ratio.items()}
        print(f"  {name:<22}{str(tuple(x.shape)):<20}{fmt_t(med(tb))}{r['joshi2020']:>10.2f}x"
              f"{r['aihwkit_default']:>11.2f}x{r['t_joshi2020']:>14.3f}x{r['t_aihwkit_default']:>13.3f}x")


def _plain_copy(analog: nn.Module, base: nn.Module) -> tuple[nn.Module, dict[str, str]]:
    """The plain model plus {analog layer name: parameter name of its weight} (weights drifted per seed go there)."""
    names = {}
    for n, m in analog.named_modules():
        if hasattr(m, "analog") and hasattr(m.analog, "w_eff"):
            names[n] = f"{n}.weight"
    return base, names


def _seed_weights(analog: nn.Module, names: dict[str, str], seed: int) -> dict[str, torch.Tensor]:
    aimc.program(analog, seed=seed)
    aimc.at_time(analog, 86400.0, seed=seed)
    mods = dict(analog.named_modules())
    return {p: mods[n].analog.effective_weight().reshape(mods[n].weight.shape).clone() for n, p in names.items()}


def multi_seed(args: argparse.Namespace) -> None:
    s_list = (2, 4) if args.quick else (2, 4, 8)
    print("\n[3] several seeds in one pass: vmap over stacked drifted weights vs one forward per seed "
          "(ResNet-32, joshi2020, same input batch)")
    torch.manual_seed(0)
    base = resnet32_cifar().eval()
    analog = aimc.convert(base, aimc.presets.joshi2020()).eval()
    plain, names = _plain_copy(analog, base)
    x = torch.randn(args.batch, 3, 32, 32)
    print(f"  {'seeds':>5}{'loop':>14}{'vmap':>14}{'vmap / loop':>13}  max |diff|")
    for s in s_list:
        per_seed = [_seed_weights(analog, names, k) for k in range(s)]
        stacked = {p: torch.stack([w[p] for w in per_seed]) for p in per_seed[0]}

        def loop() -> list[torch.Tensor]:
            return [functional_call(plain, w, (x,)) for w in per_seed]

        batched = vmap(lambda w: functional_call(plain, w, (x,)))
        with torch.inference_mode():
            ref = torch.stack(loop())
            diff = float((batched(stacked) - ref).abs().max())
            tb, tf, ratio = paired(loop, {"vmap": lambda: batched(stacked)}, 1, args.repeats, budget_s=args.budget)
        print(f"  {s:>5}{fmt_t(med(tb))}{fmt_t(med(tf['vmap']))}{med(ratio['vmap']):>12.2f}x  {diff:.2e}")
    print("  (a ratio > 1 means batching seeds is slower here; aimc then evaluates seeds one after another)")


def compile_gain(args: argparse.Namespace) -> None:
    print("\n[4] torch.compile on the analog model (ResNet-32, inference_mode; ratio compiled / eager)")
    torch.manual_seed(0)
    base = resnet32_cifar().eval()
    x = torch.randn(args.batch, 3, 32, 32)
    print(f"  {'preset':<18}{'eager':>12}{'compiled':>12}{'compiled/eager':>16}{'compile time':>14}  max |diff|")
    for preset in ("joshi2020", "aihwkit_default"):
        m = analog_model(base, preset)
        comp = torch.compile(m)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            aimc.at_time(m, 86400.0, seed=0)
            eager = m(x)
            aimc.at_time(m, 86400.0, seed=0)
            t_compile = timed(lambda: comp(x))
            aimc.at_time(m, 86400.0, seed=0)
            diff = float((comp(x) - eager).abs().max())
            tb, tf, ratio = paired(lambda: m(x), {"c": lambda: comp(x)}, 1, args.repeats, budget_s=args.budget)
        print(f"  {preset:<18}{fmt_t(med(tb))}{fmt_t(med(tf['c']))}{med(ratio['c']):>15.2f}x{t_compile:>13.1f}s"
              f"  {diff:.2e}")


def channels_last(args: argparse.Namespace) -> None:
    print("\n[5] channels-last inputs (ratio channels-last / contiguous): plain model and the programmed joshi2020 "
          "model")
    for name, base, x in nets(args):
        cl = resnet32_cifar() if "32" in name else resnet34_imagenet()
        cl.load_state_dict(base.state_dict())
        cl = cl.eval().to(memory_format=torch.channels_last)
        analog = analog_model(base, "joshi2020")
        xc = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            diff = float((analog(xc) - analog(x)).abs().max())
            tb, tf, ratio = paired(lambda: base(x), {"cl": lambda: cl(xc)}, 1, args.repeats, budget_s=args.budget)
            ta, tfa, ratio_a = paired(lambda: analog(x), {"cl": lambda: analog(xc)}, 1, args.repeats,
                                      budget_s=args.budget)
        print(f"  {name:<22} plain {med(ratio['cl']):.2f}x   analog {med(ratio_a['cl']):.2f}x   "
              f"(analog max |diff| {diff:.1e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    args.batch, args.batch34 = (16, 2) if args.quick else (128, 8)
    args.repeats, args.warmup = (3, 1) if args.quick else (7, 1)
    args.budget = 20.0 if args.quick else 90.0
    torch.set_num_threads(1)
    header(args)
    t0 = time.perf_counter()
    forward_and_drift(args)
    multi_seed(args)
    compile_gain(args)
    channels_last(args)
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
