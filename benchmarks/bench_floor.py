"""What an ``aihwkit_default`` forward cannot go below on this CPU: the plain forward plus its output noise.

Issue 20 (item 4) asks for a ResNet-32 ``aihwkit_default`` forward ≤ 2.5× plain, issue 17 (item 4) for
MobileNetV3-small- and EfficientNet-B0-shaped networks ≤ 3×. This script measures, in one run, for each workload
and for 1 and 2 torch threads:

* ``plain``: the plain model's forward (median of N; ``torch.inference_mode``);
* ``analog``: the converted model's forward, programmed and drifted to 1 day (median of N, paired: the two forwards
  alternate, ``benchmarks/_paired.py``);
* ``noise``: the output noise of that analog forward drawn alone: every ``aten::normal_`` call of one analog forward
  (shapes recorded with ``torch.profiler`` at one thread; the numbers drawn do not depend on the thread count) is
  replayed into preallocated tensors with ``aimc.nn.parallel_normal.normal_``, torch's CPU generator, on the same
  thread count (median of N);
* ``floor = (plain + noise) / plain``: a lower bound of analog / plain. The analog product has the plain layers'
  multiply-adds (printed below: the batched products' time against the plain convolutions' at one thread, from
  the profiler) and every output element needs one fresh Gaussian number for its output noise; the floor leaves
  out everything else (unfolding, DAC and ADC rounding, input ranges, bound management);
* ``gap = analog / plain − floor``: what those other passes cost, in plain forwards.

At one thread it also prints the analog forward's profile by kind of work (self CPU time: products, normals,
unfold and DAC division, other) next to the plain forward's convolutions.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_floor.py [--repeats 7] [--only resnet32] [--quick]

(``OMP_NUM_THREADS=1`` only sets the start; the script sets 1 and 2 threads itself.) Always exits 0.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).parent))
from _paired import paired_ratio  # noqa: E402
from bench_core import footer, header, med, timed  # noqa: E402
from bench_grouped import efficientnet_b0, mobilenet_v3_small  # noqa: E402

import aimc  # noqa: E402
from aimc.models import resnet32_cifar  # noqa: E402
from aimc.nn.parallel_normal import MIN_SPLIT, PARTS, _bounds, normal_  # noqa: E402

PRESET = "aihwkit_default"
TARGETS = {"resnet32": 2.5, "mobilenet_v3_small": 3.0, "efficientnet_b0": 3.0}
PRODUCT = ("aten::baddbmm_", "aten::baddbmm", "aten::bmm", "aten::mm", "aten::addmm", "aten::matmul", "aten::einsum")
CONV = ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution")


def workload(name: str, batch: int | None, size: int = 224) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model (random weights, seed 0) and its input: ResNet-32 on CIFAR-sized inputs (batch 128), the others on
    ImageNet-sized ones (batch 8; ``size`` × ``size``)."""
    torch.manual_seed(0)
    if name == "resnet32":
        return resnet32_cifar().eval(), torch.randn(batch or 128, 3, 32, 32)
    make = {"mobilenet_v3_small": mobilenet_v3_small, "efficientnet_b0": efficientnet_b0}[name]
    return make().eval(), torch.randn(batch or 8, 3, size, size)


def median_time(f, n: int) -> float:  # noqa: ANN001
    """Median of ``n`` timed calls of ``f`` after one untimed warm-up call."""
    f()
    return med([timed(f) for _ in range(n)])


def noise_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """Shapes of the noise tensors of one forward (one thread: every draw on this thread), from its
    ``aten::normal_`` calls; the :data:`~aimc.nn.parallel_normal.PARTS` flat parts that
    ``aimc.nn.parallel_normal.normal_`` splits a large tensor into are merged back into one tensor, so that the
    replay splits it over the lanes as the forward does."""
    with profile(record_shapes=True) as prof:
        model(x)
    shapes = [tuple(e.input_shapes[0]) for e in prof.events() if e.name == "aten::normal_" and e.input_shapes]
    out, i = [], 0
    while i < len(shapes):
        run = shapes[i:i + PARTS]
        if len(run) == PARTS and all(len(s) == 1 for s in run):
            total = sum(s[0] for s in run)
            if total >= MIN_SPLIT and [e - b for b, e in _bounds(total)] == [s[0] for s in run]:
                out.append((total,))
                i += PARTS
                continue
        out.append(shapes[i])
        i += 1
    return out


def by_kind(model: torch.nn.Module, x: torch.Tensor) -> Counter:
    """Self CPU seconds of one forward, summed by kind of work."""
    with profile() as prof:
        model(x)
    out: Counter = Counter()
    for e in prof.key_averages():
        kind = ("product" if e.key in PRODUCT else "conv" if e.key in CONV else "normals" if e.key == "aten::normal_"
                else "unfold+DAC division" if e.key == "aten::div" else "other")
        out[kind] += e.self_cpu_time_total / 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", choices=sorted(TARGETS), nargs="*", default=None)
    ap.add_argument("--batch", type=int, default=None, help="default: 128 for ResNet-32, 8 for the others")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 2, 64x64 inputs, 1 repeat")
    args = ap.parse_args()
    size = 224
    if args.quick:
        args.batch, args.repeats, size = 2, 1, 64
    t0 = time.perf_counter()
    header(settings=f"{PRESET}, t = 1 day, median of {args.repeats}, torch.inference_mode")
    rows = []
    for name in args.only or list(TARGETS):
        plain, x = workload(name, args.batch, size)
        analog = aimc.convert(plain, aimc.presets.get(PRESET)).eval()
        aimc.program(analog, seed=0)
        aimc.at_time(analog, 86400.0, seed=0)
        with torch.inference_mode():
            torch.set_num_threads(1)
            analog(x)
            shapes = noise_shapes(analog, x)
            bufs = [torch.empty(s) for s in shapes]
            n_normals = sum(math.prod(s) for s in shapes)
            kinds, conv = by_kind(analog, x), by_kind(plain, x)["conv"]
            print(f"\n{name}, batch {x.shape[0]}: {n_normals / 1e6:.1f} M output normals a forward; one-thread "
                  f"profile of the analog forward (self CPU): "
                  + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in kinds.most_common())
                  + f"; the plain forward's convolutions {conv * 1e3:.0f} ms")
            gen = torch.Generator().manual_seed(0)
            for threads in args.threads:
                torch.set_num_threads(threads)
                t_plain = median_time(lambda: plain(x), args.repeats)
                ratio = paired_ratio(lambda: plain(x), lambda: analog(x), args.repeats)
                t_noise = median_time(lambda: [normal_(b, 1.0, gen) for b in bufs], args.repeats)
                floor = (t_plain + t_noise) / t_plain
                rows.append((name, threads, t_plain, ratio, t_noise, floor, TARGETS[name]))
                print(f"  threads {threads}: plain {t_plain * 1e3:7.1f} ms, analog/plain {ratio:5.2f}x, noise alone "
                      f"{t_noise * 1e3:6.1f} ms ({t_noise / n_normals * 1e9:.2f} ns a normal), floor {floor:.2f}x, "
                      f"target {TARGETS[name]}x")
    print(f"\n{'workload':<20}{'threads':>8}{'plain ms':>10}{'analog/plain':>14}{'noise ms':>10}{'floor':>8}"
          f"{'gap':>7}{'target':>8}")
    for name, threads, tp, r, tn, fl, tg in rows:
        print(f"{name:<20}{threads:>8}{tp * 1e3:>10.1f}{r:>13.2f}x{tn * 1e3:>10.1f}{fl:>7.2f}x{r - fl:>7.2f}"
              f"{tg:>7.1f}x")
    footer(t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
