"""aimc vs IBM aihwkit, side by side in one process: same networks, same PCM model, same ``aihwkit_default`` periphery.

What it measures (wall clock, ``time.perf_counter``; torch and OpenMP at ONE thread in both libraries):

1. time to convert a model (``aimc.convert`` vs ``aihwkit.nn.conversion.convert_to_analog``; plain PyTorch
   baseline: ``copy.deepcopy`` of the model, since both conversions return a copy);
2. time to program it (``aimc.program`` vs ``model.program_analog_weights()``; baseline: one plain forward of the
   timing batch);
3. time to drift it to t = 1 day, global drift compensation included (``aimc.at_time`` vs
   ``model.drift_analog_weights``; baseline: one plain forward);
4. inference throughput at t = 1 day under ``torch.no_grad`` with the ``aihwkit_default`` periphery (reference B.9:
   7-bit DAC with per-vector abs-max, 9-bit ADC, output bound 12, output noise 0.06, iterative bound management) and
   with an ideal periphery (aihwkit ``forward.is_perfect``); target: aimc ≥ 5× aihwkit's throughput;
5. hardware-aware (HWA) training step: forward + backward + SGD(lr 0.01, momentum 0.9) step + weight clipping, with
   additive weight noise η = 3.8 % of max|W| and Gaussian clipping at 2σ in both libraries (aimc: the
   ``aihwkit_default`` preset's training config + ``aimc.clip``; aihwkit: ``WeightModifierType.ADD_NORMAL`` +
   ``WeightClipType.LAYER_GAUSSIAN`` + ``AnalogSGD``), aihwkit once with its periphery active in the training forward
   (its default behaviour) and once with ``forward.is_perfect = True`` (the same computation as aimc's training
   forward: noisy weights, ideal MVM); target: aimc step ≥ 2× faster;
6. accuracy of the SAME trained MNIST network (an MLP 784-250-10 and a LeNet-like CNN with batch norm, trained once
   in floating point with plain PyTorch) converted into both libraries, 10 programming seeds at t = 1 h and 1 day
   with global drift compensation, under (a) the PCM model with an ideal periphery (joshi2020-like, but with
   aihwkit's per-tile weight scale and GDC read-out so both libraries compute the same thing) and (b) the
   ``aihwkit_default`` periphery: mean, std, 95 % CI (Student t) per library, whether the two CIs overlap, and the
   95 % CI of the difference of the means (Welch). aimc's own ``joshi2020`` preset (layer scale, correlation GDC
   read-out, no aihwkit equivalent) is shown for information.

Every timing is taken in rounds: in each round every variant (plain PyTorch, aimc, aihwkit, ...) runs once, in an
order that rotates from round to round, so background load hits all alike. Reported: the median time of each
variant, the medians over rounds of the per-round ratios aimc/plain, aihwkit/plain and aimc/aihwkit, and the median
of the per-round speed-ups aihwkit time / aimc time (> 1: aimc is faster). Verdicts (PASS/MISS) use that median
speed-up. A series whose warm-up says it would overrun its time budget gets fewer rounds (≥ 3; column n).

How to install aihwkit into a separate virtual environment (aihwkit 1.1.0's compiled extension is built against
an older torch than aimc's 2.13: with torch 2.13 it reads tensor shapes wrongly, with torch 2.9.1 it fails with
``undefined symbol _ZNK3c1010TensorImpl15decref_pyobjectEv``; torch 2.10.0 works; aimc runs on 2.10 unchanged)::

    python3.11 -m venv /work/aihwkit-venv                      # the aihwkit 1.1.0 wheel is cp311 (manylinux x86_64)
    /work/aihwkit-venv/bin/pip install torch==2.10.0           # PyPI's default (CUDA) build, ~3 GB with its CUDA libs
    /work/aihwkit-venv/bin/pip install --no-deps aihwkit==1.1.0   # --no-deps: its metadata lists build tools
                                                                   # (cmake, mypy, pybind11, scikit-build) and torchvision
    /work/aihwkit-venv/bin/pip install scipy scikit-learn tqdm requests protobuf
    /work/aihwkit-venv/bin/pip install --no-deps -e /work/main      # aimc itself, without touching that torch
    /work/aihwkit-venv/bin/pip install numpy pandas typer rich matplotlib safetensors pyyaml

Usage::

    /work/aihwkit-venv/bin/python benchmarks/vs_aihwkit.py           # full run (~10 min on one core)
    /work/aihwkit-venv/bin/python benchmarks/vs_aihwkit.py --quick   # smoke test (~1 min)
    .venv/bin/python benchmarks/vs_aihwkit.py --quick                # aimc's venv: no aihwkit -> install hint, exit 0

Data: MNIST from the aimc data directory (``AIMC_DATA`` or ``../shared/data``), the pretrained ResNet-32 and the
CIFAR-10 test images for the ResNet-32 timings when present (random weights and inputs otherwise; printed).
Always exits 0; PASS/MISS lines report the targets.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch / aihwkit load their OpenMP runtimes

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import aimc  # noqa: E402
from aimc.config import AnalogConfig, CompensationConfig, MappingConfig, PeripheryConfig, TrainingConfig  # noqa: E402
from aimc.devices import PCM  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_core  # noqa: E402
from bench_core import footer  # noqa: E402

TARGET_INFERENCE = 5.0  # aimc throughput ≥ 5× aihwkit's at the same periphery
TARGET_TRAIN = 2.0  # aimc HWA training step ≥ 2× faster than aihwkit's
T_DRIFT = 86400.0  # timings at t = 1 day
ACC_TIMES = (3600.0, 86400.0)  # accuracy at 1 h and 1 day
HWA_ETA, HWA_ALPHA = 0.038, 2.0

INSTALL_HINT = """\
aihwkit is not usable in this Python environment, so only this hint is printed (exit status 0).

To run the comparison, install aihwkit 1.1.0 into a SEPARATE virtual environment together with torch 2.10.0
(aihwkit 1.1.0's compiled extension does not work with aimc's torch 2.13: tensor shapes are read wrongly; with
torch 2.9.1 it fails with an undefined symbol), then install aimc there without touching that torch:

    python3.11 -m venv /work/aihwkit-venv
    /work/aihwkit-venv/bin/pip install torch==2.10.0
    /work/aihwkit-venv/bin/pip install --no-deps aihwkit==1.1.0
    /work/aihwkit-venv/bin/pip install scipy scikit-learn tqdm requests protobuf
    /work/aihwkit-venv/bin/pip install --no-deps -e /work/main
    /work/aihwkit-venv/bin/pip install numpy pandas typer rich matplotlib safetensors pyyaml

and run:

    /work/aihwkit-venv/bin/python benchmarks/vs_aihwkit.py            # add --quick for a smoke test

Results of a full run: docs/results/vs_aihwkit.md."""


# ---- aihwkit availability ---------------------------------------------------------------------------------------
def aihwkit_status() -> tuple[bool, str]:
    """(usable, message): aihwkit imports AND computes a perfect forward equal to ``F.linear``.

    The second check catches an aihwkit whose compiled extension was built against another torch (it may import and
    then read tensor shapes wrongly).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import aihwkit
            from aihwkit.nn import AnalogLinear
            from aihwkit.simulator.configs import InferenceRPUConfig
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable here"
        return False, f"aihwkit is not importable ({type(e).__name__}: {e})"
    try:
        rc = InferenceRPUConfig()
        rc.forward.is_perfect = True
        g = torch.Generator().manual_seed(0)
        w, b, x = torch.randn(6, 10, generator=g), torch.randn(6, generator=g), torch.randn(5, 10, generator=g)
        layer = AnalogLinear(10, 6, rpu_config=rc)
        layer.set_weights(w, b)
        layer.eval()
        with torch.no_grad():
            y = layer(x)
        err = float((y - F.linear(x, w, b)).abs().max()) if y.shape == (5, 6) else float("inf")
    except Exception as e:  # noqa: BLE001
        return False, f"aihwkit {aihwkit.__version__} imports but fails a 6x10 AnalogLinear ({type(e).__name__}: {e})"
    if not err < 1e-4:
        return False, (f"aihwkit {aihwkit.__version__} imports but computes wrongly with torch {torch.__version__} "
                       f"(perfect 6x10 AnalogLinear differs from F.linear by {err:.3g}; its extension was built "
                       "for another torch)")
    return True, f"aihwkit {aihwkit.__version__}"


# ---- configurations ---------------------------------------------------------------------------------------------
def aimc_ideal_periphery() -> AnalogConfig:
    """PCM model with an ideal periphery, mapped and compensated as aihwkit does (per-tile scale, identity GDC)."""
    return AnalogConfig(device=PCM(), mapping=MappingConfig(tile_rows=512, tile_cols=512, scale="tile"),
                        periphery=PeripheryConfig(),
                        compensation=CompensationConfig(gdc=True, readout="identity_abs_mean", granularity="tile"),
                        training=TrainingConfig(noise="additive", eta=HWA_ETA, clip="gaussian", clip_alpha=HWA_ALPHA),
                        name="pcm_ideal_periphery")


def aihwkit_config(periphery: str, hwa: bool = False):  # noqa: ANN201
    """aihwkit ``InferenceRPUConfig`` matching aimc's ``aihwkit_default`` (``periphery="default"``, every B.9 value set
    explicitly) or ``pcm_ideal_periphery`` (``periphery="ideal"``: ``forward.is_perfect``). With ``hwa``: additive
    weight noise η = 3.8 % of the tile's max|W| and Gaussian clipping at 2σ for training."""
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.simulator.configs import InferenceRPUConfig
    from aihwkit.simulator.parameters.enums import (
        BoundManagementType,
        NoiseManagementType,
        WeightClipType,
        WeightModifierType,
        WeightNoiseType,
    )

    rc = InferenceRPUConfig()
    rc.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rc.drift_compensation = GlobalDriftCompensation()
    rc.mapping.max_input_size = 512
    rc.mapping.max_output_size = 512
    rc.mapping.digital_bias = True
    rc.mapping.weight_scaling_omega = 0.0
    f = rc.forward
    if periphery == "ideal":
        f.is_perfect = True
    else:
        f.is_perfect = False
        f.inp_bound, f.inp_res, f.inp_noise = 1.0, 1 / (2**7 - 2), 0.0
        f.out_bound, f.out_res, f.out_noise = 12.0, 1 / (2**9 - 2), 0.06
        f.noise_management = NoiseManagementType.ABS_MAX
        f.bound_management = BoundManagementType.ITERATIVE
        f.max_bm_factor, f.max_bm_res = 1000, 0.25
        f.w_noise, f.w_noise_type = 0.0, WeightNoiseType.NONE
        f.ir_drop = 0.0
    if hwa:
        rc.modifier.type = WeightModifierType.ADD_NORMAL
        rc.modifier.std_dev = HWA_ETA
        rc.modifier.rel_to_actual_wmax = True
        rc.clip.type = WeightClipType.LAYER_GAUSSIAN
        rc.clip.sigma = HWA_ALPHA
    return rc


def to_aihwkit(model: nn.Module, rc) -> nn.Module:  # noqa: ANN001
    from aihwkit.nn.conversion import convert_to_analog

    return convert_to_analog(model, rc)


# ---- timing -----------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rounds(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
           budget_s: float) -> dict[str, list[float]]:
    """Time every function once per round, order rotating from round to round; ``repeats`` rounds, fewer (≥ 3) when
    the warm-up says they would take longer than ``budget_s``."""
    names = list(fns)
    est = {n: 0.0 for n in names}
    for _ in range(warmup):
        for n in names:
            est[n] = timed(fns[n])
    per_round = sum(est.values())
    n_rounds = repeats if per_round * repeats <= budget_s else max(3, int(budget_s / max(per_round, 1e-9)))
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(n_rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            out[n].append(timed(fns[n]))
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio(ts: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ts[a]/ts[b]."""
    return med([x / y for x, y in zip(ts[a], ts[b])])


def fmt_t(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:7.0f} µs"
    return f"{s * 1e3:7.1f} ms" if s < 10 else f"{s:7.2f} s "


def verdict(speedup: float, target: float) -> str:
    return "PASS" if speedup >= target else "MISS"


SUMMARY: list[str] = []


def print_rows(title: str, rows: list[tuple[str, dict[str, list[float]], str, str]], *, target: float | None = None,
               batch: dict[str, int] | None = None, key: str = "") -> None:
    """rows: (label, times, aimc key, aihwkit key); times also holds "plain"."""
    print(title)
    head = (f"  {'network':<22}{'n':>3}{'plain':>11}{'aimc':>11}{'aihwkit':>11}{'aimc/plain':>11}"
            f"{'aihwkit/plain':>14}{'aimc/aihwkit':>13}{'aimc speed-up':>14}")
    if batch is not None:
        head += f"{'aimc img/s':>11}{'aihwkit img/s':>14}"
    if target is not None:
        head += f"{'target':>8}  verdict"
    print(head)
    for label, ts, ka, kh in rows:
        su = ratio(ts, kh, ka)
        line = (f"  {label:<22}{len(ts['plain']):>3}{fmt_t(med(ts['plain'])):>11}{fmt_t(med(ts[ka])):>11}"
                f"{fmt_t(med(ts[kh])):>11}{ratio(ts, ka, 'plain'):>10.2f}x{ratio(ts, kh, 'plain'):>13.2f}x"
                f"{ratio(ts, ka, kh):>12.3f}x{su:>13.2f}x")
        if batch is not None:
            b = batch[label]
            line += f"{b / med(ts[ka]):>11.0f}{b / med(ts[kh]):>14.0f}"
        if target is not None:
            line += f"{'≥' + format(target, '.0f') + 'x':>8}  {verdict(su, target)}"
            SUMMARY.append(f"{key:<34} {label:<22} aimc speed-up {su:6.2f}x  target ≥ {target:.0f}x  "
                           f"{verdict(su, target)}")
        print(line)


# ---- networks and data ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Net:
    label: str
    model: nn.Module  # trained (or pretrained) float model, eval mode
    x: torch.Tensor  # timing batch
    y: torch.Tensor  # its labels (training step)


def load_mnist(quick: bool):  # noqa: ANN201
    from aimc.data import mnist

    train = mnist("train", limit=6000 if quick else None)
    test = mnist("test", limit=2000 if quick else None)
    return train, test


def train_fp(model: nn.Module, train, epochs: int, seed: int = 0) -> nn.Module:  # noqa: ANN001
    """Plain floating-point training (Adam, cosine schedule; aimc.train.loop.fit on a plain model)."""
    from torch.utils.data import DataLoader

    from aimc.train.loop import fit

    torch.manual_seed(seed)
    loader = DataLoader(train, batch_size=128, shuffle=True, generator=torch.Generator().manual_seed(seed))
    fit(model, loader, epochs=epochs, lr=2e-3)
    return model.eval()


def digital_accuracy(model: nn.Module, loader) -> float:  # noqa: ANN001
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def resnet32_net(batch: int) -> Net:
    from aimc.models import resnet32_cifar

    try:
        from aimc.data import cifar10
        from aimc.models.resnet_cifar import load_pretrained_resnet32

        model = load_pretrained_resnet32().eval()
        ds = cifar10("test", limit=max(batch, 10))
        x = torch.stack([ds[i][0] for i in range(batch)])
        y = torch.tensor([int(ds[i][1]) for i in range(batch)])
        label = "ResNet-32 (pretrained)"
    except Exception as e:  # noqa: BLE001 - data files are optional for timings
        print(f"  (pretrained ResNet-32 / CIFAR-10 not available: {type(e).__name__}; random weights and inputs)")
        torch.manual_seed(0)
        model = resnet32_cifar().eval()
        x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
        label = "ResNet-32 (random)"
    return Net(label, model, x, y)


def count_tiles_aimc(model: nn.Module) -> int:
    from aimc.nn.convert import analog_layers

    a = aimc.convert(model, aimc.presets.aihwkit_default())
    return sum(m.layout.n_row_tiles * m.layout.n_col_tiles
               for _, layer in analog_layers(a) for m, _ in layer.analog_matrices().values())


def count_tiles_aihwkit(model: nn.Module) -> int:
    return len(list(to_aihwkit(model, aihwkit_config("default")).analog_tiles()))


# ---- sections ---------------------------------------------------------------------------------------------------
def bench_setup(nets: list[Net], args) -> None:  # noqa: ANN001
    """[1]-[3]: convert, program, drift (aihwkit_default periphery, both libraries)."""
    conv_rows, prog_rows, drift_rows = [], [], []
    for net in nets:
        m, x = net.model, net.x
        cfg, rc = aimc.presets.aihwkit_default(), aihwkit_config("default")
        ts = rounds({"plain": lambda: copy.deepcopy(m), "aimc": lambda: aimc.convert(m, cfg),
                     "aihwkit": lambda: to_aihwkit(m, rc)}, args.warmup, args.repeats, args.budget)
        conv_rows.append((net.label, ts, "aimc", "aihwkit"))

        a = aimc.convert(m, cfg).eval()
        h = to_aihwkit(m, rc).eval()

        def plain_fwd() -> None:
            with torch.no_grad():
                m(x)

        def prog_h() -> None:
            torch.manual_seed(0)
            h.program_analog_weights()

        ts = rounds({"plain": plain_fwd, "aimc": lambda: aimc.program(a, seed=0), "aihwkit": prog_h},
                    args.warmup, args.repeats, args.budget)
        prog_rows.append((net.label, ts, "aimc", "aihwkit"))

        def drift_h() -> None:
            torch.manual_seed(1)
            h.drift_analog_weights(T_DRIFT)

        ts = rounds({"plain": plain_fwd, "aimc": lambda: aimc.at_time(a, T_DRIFT, seed=0), "aihwkit": drift_h},
                    args.warmup, args.repeats, args.budget)
        drift_rows.append((net.label, ts, "aimc", "aihwkit"))
    print_rows("\n[1] convert a model (periphery aihwkit_default); plain = copy.deepcopy(model)", conv_rows)
    print_rows("\n[2] program (programming noise + drift exponents + GDC baseline); plain = one forward of the "
               "timing batch", prog_rows)
    print_rows(f"\n[3] drift to t = 1 day (drift + read noise + GDC read-out); plain = one forward of the timing "
               "batch", drift_rows)


def bench_inference(nets: list[Net], args) -> None:  # noqa: ANN001
    for periphery, cfg_fn, title in (
            ("default", aimc.presets.aihwkit_default, "aihwkit_default periphery (7-bit DAC abs-max, 9-bit ADC, "
                                                      "out noise 0.06, iterative BM)"),
            ("ideal", aimc_ideal_periphery, "PCM with ideal periphery (aihwkit forward.is_perfect)")):
        rows, batch = [], {}
        for net in nets:
            m, x = net.model, net.x
            a = aimc.convert(m, cfg_fn()).eval()
            aimc.program(a, seed=0)
            aimc.at_time(a, T_DRIFT, seed=0)
            h = to_aihwkit(m, aihwkit_config(periphery)).eval()
            torch.manual_seed(0)
            h.program_analog_weights()
            h.drift_analog_weights(T_DRIFT)
            with torch.no_grad():
                ts = rounds({"plain": lambda: m(x), "aimc": lambda: a(x), "aihwkit": lambda: h(x)},
                            args.warmup, args.repeats, args.budget)
            rows.append((net.label, ts, "aimc", "aihwkit"))
            batch[net.label] = x.shape[0]
        print_rows(f"\n[4{'a' if periphery == 'default' else 'b'}] inference forward at t = 1 day, torch.no_grad, "
                   f"{title}", rows, target=TARGET_INFERENCE, batch=batch,
                   key=f"inference ({'aihwkit_default' if periphery == 'default' else 'ideal periphery'})")


def bench_train(nets: list[Net], args) -> None:  # noqa: ANN001
    from aihwkit.optim import AnalogSGD

    rows_default, rows_perfect = [], []
    for net in nets:
        x, y = net.x, net.y
        plain = copy.deepcopy(net.model).train()
        hwa = aimc.convert(net.model, aimc.presets.aihwkit_default()).train()
        hk = to_aihwkit(net.model, aihwkit_config("default", hwa=True)).train()
        hp = to_aihwkit(net.model, aihwkit_config("ideal", hwa=True)).train()
        opt_p = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)
        opt_a = torch.optim.SGD(hwa.parameters(), lr=0.01, momentum=0.9)
        opt_k = AnalogSGD(hk.parameters(), lr=0.01, momentum=0.9)
        opt_k.regroup_param_groups(hk)
        opt_q = AnalogSGD(hp.parameters(), lr=0.01, momentum=0.9)
        opt_q.regroup_param_groups(hp)

        def step(model: nn.Module, opt, after: Callable[[], object] | None = None) -> Callable[[], None]:  # noqa: ANN001
            def run() -> None:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                opt.step()
                if after is not None:
                    after()
            return run

        ts = rounds({"plain": step(plain, opt_p), "aimc": step(hwa, opt_a, lambda: aimc.clip(hwa)),
                     "aihwkit": step(hk, opt_k), "aihwkit_perfect": step(hp, opt_q)},
                    args.warmup, args.repeats, args.budget_train)
        rows_default.append((net.label, ts, "aimc", "aihwkit"))
        rows_perfect.append((net.label, ts, "aimc", "aihwkit_perfect"))
    print(f"\n[5] HWA training step: forward + backward + SGD(lr 0.01, momentum 0.9) + clipping; weight noise "
          f"additive {HWA_ETA:.3f}·max|W|, clip ±{HWA_ALPHA:g}σ; aimc = aihwkit_default preset + aimc.clip")
    print_rows("  [5a] aihwkit with its forward periphery active during training (aihwkit's default behaviour; aimc "
               "trains with an ideal MVM)", rows_default, target=TARGET_TRAIN, key="HWA step (aihwkit periphery on)")
    print_rows("  [5b] aihwkit with forward.is_perfect = True (the same computation as aimc: noisy weights, ideal MVM)",
               rows_perfect, target=TARGET_TRAIN, key="HWA step (aihwkit is_perfect)")


# ---- accuracy ---------------------------------------------------------------------------------------------------
def stats_of(acc: list[float]) -> tuple[float, float, float, float]:
    """mean, std, CI low, CI high (fractions; Student t, 95 %)."""
    from scipy import stats

    n = len(acc)
    m = statistics.fmean(acc)
    sd = statistics.stdev(acc) if n > 1 else 0.0
    h = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else float("nan")
    return m, sd, m - h, m + h


def welch_diff(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) − mean(b) and its 95 % CI (Welch)."""
    from scipy import stats

    na, nb = len(a), len(b)
    va, vb = statistics.variance(a), statistics.variance(b)
    d = statistics.fmean(a) - statistics.fmean(b)
    se2 = va / na + vb / nb
    if se2 == 0:
        return d, d, d
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    h = float(stats.t.ppf(0.975, df)) * math.sqrt(se2)
    return d, d - h, d + h


def aihwkit_accuracy(h: nn.Module, loader, seeds: list[int], times: tuple[float, ...]) -> dict[float, list[float]]:  # noqa: ANN001
    """Program once per seed (torch.manual_seed before programming and before each drift: aihwkit samples programming,
    drift and read noise from torch's global generator), then drift to each t with GDC."""
    out: dict[float, list[float]] = {t: [] for t in times}
    h.eval()
    for s in seeds:
        torch.manual_seed(1000 + s)
        h.program_analog_weights()
        for t in times:
            torch.manual_seed(100_000 * (s + 1) + int(t) % 99_991)
            h.drift_analog_weights(t)
            out[t].append(digital_accuracy(h, loader))
    return out


def aimc_accuracy(a: nn.Module, loader, seeds: list[int], times: tuple[float, ...]) -> dict[float, list[float]]:  # noqa: ANN001
    res = aimc.evaluate(a, loader, times=list(times), seeds=seeds, compensation="gdc", progress=False)
    tab = res.table
    return {t: [float(v) for v in tab[tab["t_seconds"] == t].sort_values("seed")["accuracy"]] for t in times}


def bench_accuracy(acc_nets: list[tuple[str, nn.Module]], test, args) -> None:  # noqa: ANN001
    from torch.utils.data import DataLoader

    loader = DataLoader(test, batch_size=1000)
    seeds = list(range(args.seeds))
    print(f"\n[6] accuracy of the same trained network in both libraries: {len(test)} MNIST test images, "
          f"{len(seeds)} programming seeds, GDC; mean ± 95 % CI (Student t), accuracies in %")
    print(f"  {'network':<10}{'setting':<22}{'t':>5}  {'library':<8}{'mean':>7}{'std':>6}{'95 % CI':>17}   "
          f"{'CIs overlap':<12}{'aimc − aihwkit [95 % CI] (pp)':<30}")
    for label, model in acc_nets:
        fp = digital_accuracy(model, loader)
        print(f"  {label:<10}{'floating point':<22}{'—':>5}  {'torch':<8}{100 * fp:>7.2f}")
        settings = (("ideal periphery", aimc_ideal_periphery(), "ideal"),
                    ("aihwkit_default", aimc.presets.aihwkit_default(), "default"))
        for name, cfg, per in settings:
            t0 = time.perf_counter()
            ra = aimc_accuracy(aimc.convert(model, cfg), loader, seeds, ACC_TIMES)
            t_a = time.perf_counter() - t0
            t0 = time.perf_counter()
            rh = aihwkit_accuracy(to_aihwkit(model, aihwkit_config(per)), loader, seeds, ACC_TIMES)
            t_h = time.perf_counter() - t0
            for t in ACC_TIMES:
                tl = "1 h" if t == 3600 else "1 d"
                sa, sh = stats_of(ra[t]), stats_of(rh[t])
                overlap = sa[2] <= sh[3] and sh[2] <= sa[3]
                d, lo, hi = welch_diff(ra[t], rh[t])
                for lib, s in (("aimc", sa), ("aihwkit", sh)):
                    line = (f"  {label:<10}{name:<22}{tl:>5}  {lib:<8}{100 * s[0]:>7.2f}{100 * s[1]:>6.2f}"
                            f"{100 * s[2]:>8.2f} – {100 * s[3]:<6.2f}")
                    if lib == "aihwkit":
                        line += (f"   {'yes' if overlap else 'NO':<12}{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
                                 f"{'' if lo <= 0 <= hi else '  (excludes 0)'}")
                    print(line)
                SUMMARY.append(f"accuracy {label} {name} {tl}: aimc {100 * sa[0]:.2f} ± {100 * (sa[3] - sa[0]):.2f}, "
                               f"aihwkit {100 * sh[0]:.2f} ± {100 * (sh[3] - sh[0]):.2f} -> CIs "
                               f"{'overlap' if overlap else 'DO NOT overlap'}")
            print(f"  {'':<10}{'':<22}       (evaluation wall time: aimc {t_a:.1f} s, aihwkit {t_h:.1f} s)")
        # aimc's own joshi2020 preset (layer scale, correlation GDC): no aihwkit equivalent, for information
        rj = aimc_accuracy(aimc.convert(model, aimc.presets.joshi2020()), loader, seeds, ACC_TIMES)
        for t in ACC_TIMES:
            s = stats_of(rj[t])
            print(f"  {label:<10}{'joshi2020 (aimc only)':<22}{'1 h' if t == 3600 else '1 d':>5}  {'aimc':<8}"
                  f"{100 * s[0]:>7.2f}{100 * s[1]:>6.2f}{100 * s[2]:>8.2f} – {100 * s[3]:<6.2f}")


# ---- main -------------------------------------------------------------------------------------------------------
def header(args: argparse.Namespace, status: str) -> None:
    bench_core.header(
        settings=f"batch {args.batch} (MNIST nets) / {args.batch_resnet} (ResNet-32), warm-up {args.warmup}, "
                 f"rounds {args.repeats}, budget {args.budget:g} s per timing ({args.budget_train:g} s training), "
                 f"seeds {args.seeds}, epochs {args.epochs}" + (" (--quick)" if args.quick else ""),
        machine_extra=f", OMP_NUM_THREADS {os.environ.get('OMP_NUM_THREADS')}, {status}", width=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 6,000 training / 2,000 test images, batch 16, 3 rounds, 3 seeds")
    ap.add_argument("--batch", type=int, default=None, help="timing batch of the MNIST nets (default 128, quick 16)")
    ap.add_argument("--batch-resnet", type=int, default=None, help="timing batch of ResNet-32 (default 64, quick 8)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 10, quick 3)")
    ap.add_argument("--budget", type=float, default=40.0,
                    help="seconds allowed per timing series; fewer rounds (≥ 3) above it (default 40)")
    ap.add_argument("--budget-train", type=float, default=75.0,
                    help="the same for the training-step series (four variants per round; default 75)")
    ap.add_argument("--seeds", type=int, default=None, help="programming seeds of the accuracy test (default 10)")
    ap.add_argument("--epochs", type=int, default=None, help="FP training epochs of the MNIST nets (default 2)")
    ap.add_argument("--skip-accuracy", action="store_true", help="timings only")
    ap.add_argument("--skip-timing", action="store_true", help="accuracy only")
    args = ap.parse_args(argv)
    args.batch = args.batch or (16 if args.quick else 128)
    args.batch_resnet = args.batch_resnet or (8 if args.quick else 64)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.seeds = args.seeds or (3 if args.quick else 10)
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.warmup = 1 if args.quick else 2
    torch.set_num_threads(1)
    t_start = time.perf_counter()

    ok, status = aihwkit_status()
    header(args, status if ok else "aihwkit NOT usable")
    if not ok:
        print(status)
        print()
        print(INSTALL_HINT)
        return 0

    from aimc.models import mnist_cnn, mnist_mlp

    print("\n[0] training the MNIST networks once in floating point (plain PyTorch, Adam)")
    train, test = load_mnist(args.quick)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    mlp = train_fp(mnist_mlp(), train, epochs=args.epochs)
    t1 = time.perf_counter()
    cnn = train_fp(mnist_cnn(), train, epochs=args.epochs)
    t2 = time.perf_counter()
    print(f"  MLP 784-250-10: {args.epochs} epoch(s) on {len(train)} images in {t1 - t0:.1f} s; "
          f"CNN (LeNet + BN): {t2 - t1:.1f} s")

    if not args.skip_timing:
        nets = []
        for label, model in (("MNIST MLP 784-250-10", mlp), ("MNIST CNN (LeNet+BN)", cnn)):
            x = torch.stack([test[i][0] for i in range(args.batch)])
            y = torch.stack([test[i][1] for i in range(args.batch)])
            nets.append(Net(label, model, x, y))
        nets.append(resnet32_net(args.batch_resnet))
        print("  timing batches: " + ", ".join(f"{n.label} {tuple(n.x.shape)}" for n in nets))
        for n in nets:
            print(f"  {n.label}: crossbar tiles aimc {count_tiles_aimc(n.model)}, aihwkit {count_tiles_aihwkit(n.model)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bench_setup(nets, args)
            bench_inference(nets, args)
            bench_train(nets, args)

    if not args.skip_accuracy:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bench_accuracy([("MLP", mlp), ("CNN", cnn)], test, args)

    print("\nsummary")
    for s in SUMMARY:
        print("  " + s)
    footer(t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
