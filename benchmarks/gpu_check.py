"""GPU check in one command (issue 20, item 6): the GPU tests, the same chip on CPU and CUDA, and timings.

Parts (``--parts``, default all, in this order):

* ``tests``: pytest on the tests that skip without CUDA (in the test files that use ``torch.cuda``, each test whose
  ``skipif`` reason names CUDA or a GPU, or whose name says ``cuda``), in a child process with
  ``CUBLAS_WORKSPACE_CONFIG`` set (the suite runs with deterministic algorithms, which cuBLAS refuses without it).
* ``equality``: the counter-based generator (``aimc.rng``) and a small programmed and drifted model on CPU and on
  the GPU with the same seeds: the generator's integer words must be bit-identical, its uniforms too (exact
  float64 arithmetic on them); normals within a few ulp (``log``/``cos`` may round differently); conductances,
  drift exponents and effective weights (1 day, no GDC) within a few ulp of the matrix's largest value. The GDC
  factor comes from a read-out with ``torch.Generator`` periphery noise (not counter-based): shown, not required
  equal.
* ``resnet``: ResNet-32 (pretrained CIFAR-10 weights and 128 test images where the data directory has them, else
  random init and random inputs), ``joshi2020`` and ``aihwkit_default``: time of ``aimc.program`` and
  ``aimc.at_time`` (1 day, GDC), analog forward / plain forward (median of ``--repeats``), peak GPU memory
  (``torch.cuda.max_memory_allocated``) of the analog model's program + at_time + forward over the plain
  model's forward.
* ``llm``: the same for a 1.1 B-parameter Llama-shaped model (TinyLlama shapes: hidden 2048, 22 layers,
  intermediate 5632, 32 query / 4 key-value heads, vocab 32000; random weights, built on the GPU, no download),
  converted in place, on 128 tokens, ``joshi2020``.

Plain and analog forwards are timed one after the other (the model is converted in place, so the plain one is gone),
each with ``torch.cuda.synchronize`` around it. The whole run stays within ``--budget`` seconds (default 480): a part
that would start with too little time left is skipped with a message, and an alarm stops a part at the budget.

Without CUDA the script exits 2 with a message; ``--allow-cpu`` runs a tiny version of every part on the CPU (the
equality part then compares CPU with CPU: it tests the script, not a GPU). Exit status 1 if a test or an equality
check fails. Usage::

    PYTHONPATH=src python benchmarks/gpu_check.py                      # on a CUDA machine, all parts
    PYTHONPATH=src python benchmarks/gpu_check.py --parts equality llm --json gpu_check.json
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --allow-cpu     # no GPU: tiny run on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _chip_equality import (ULP_COND, ULP_NORMAL, ULP_WEIGHT, chip_distances, chip_verdict,  # noqa: E402
                            programmed, rng_distances)
from _llama import TINYLLAMA, Llama  # noqa: E402

PARTS = ("tests", "equality", "resnet", "llm")
MIN_LEFT_S = {"tests": 60.0, "equality": 20.0, "resnet": 60.0, "llm": 150.0}  # below: skip the part (not tiny)
TINY_LLAMA = dict(hidden=64, layers=2, intermediate=160, heads=4, kv_heads=2, vocab=256)
TIMED_PRESETS = {"resnet": ("joshi2020", "aihwkit_default"), "llm": ("joshi2020",)}


class OutOfBudget(Exception):
    """The wall-clock budget ran out inside a part."""


class Budget:
    """Wall-clock budget of the whole run; ``alarm()`` interrupts a part when it runs out (Unix)."""

    def __init__(self, seconds: float):
        self.total, self.start = float(seconds), time.perf_counter()

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)

    def check(self, what: str, need: float = 0.0) -> None:
        if self.left() < need:
            raise OutOfBudget(f"{self.left():.0f} s of the {self.total:.0f} s budget left, {what} needs ~{need:.0f} s")

    @contextlib.contextmanager
    def alarm(self) -> Iterator[None]:
        if not hasattr(signal, "SIGALRM"):
            yield
            return

        def ring(*_: object) -> None:
            raise OutOfBudget(f"the {self.total:.0f} s budget ran out")

        old = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 1e-3))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


# ---- part 1: the GPU tests -----------------------------------------------------------------------------------
def cuda_test_files() -> list[str]:
    """Test files that use ``torch.cuda`` (this script's own test excluded: it runs this script)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "torch.cuda" in p.read_text() and p.name != "test_gpu_check.py")


class SelectCuda:
    """pytest plugin: keep only the tests that skip without CUDA (or are named for it); report outcomes."""

    def __init__(self) -> None:
        self.selected: list[str] = []
        self.outcomes: dict[str, str] = {}

    @staticmethod
    def wants_cuda(item) -> bool:  # noqa: ANN001 - a pytest item
        reasons = [str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif")]
        return "cuda" in item.name.lower() or any("cuda" in r.lower() or "gpu" in r.lower() for r in reasons)

    def pytest_collection_modifyitems(self, config, items) -> None:  # noqa: ANN001
        keep = [i for i in items if self.wants_cuda(i)]
        drop = [i for i in items if not self.wants_cuda(i)]
        if drop:
            config.hook.pytest_deselected(items=drop)
        items[:] = keep
        self.selected = [i.nodeid for i in keep]

    def pytest_runtest_logreport(self, report) -> None:  # noqa: ANN001
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.nodeid] = report.outcome


def run_pytest_child(report: str, args: list[str]) -> int:
    """pytest on ``args`` with :class:`SelectCuda`; the selected tests and their outcomes go to ``report`` (JSON)."""
    import pytest

    sel = SelectCuda()
    rc = int(pytest.main(args, plugins=[sel]))
    Path(report).write_text(json.dumps({"selected": sel.selected, "outcomes": sel.outcomes}))
    return rc


def part_tests(a: argparse.Namespace, device: torch.device, budget: Budget, res: dict) -> None:
    files = cuda_test_files()
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    print(f"  pytest on the CUDA tests of {len(files)} files: {' '.join(files)}")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "tests.json"
        cmd = [sys.executable, __file__, "--pytest-child", str(report), *files, "-q", "-rs", "-p", "no:cacheprovider"]
        try:
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=max(budget.left(), 1))
        except subprocess.TimeoutExpired as e:
            print("\n".join("  | " + x for x in (e.stdout or "").splitlines()[-150:]))
            raise OutOfBudget("pytest did not finish within the budget") from e
        info = json.loads(report.read_text()) if report.is_file() else None
    print("\n".join("  | " + x for x in p.stdout.splitlines()[-150:]))  # failures in full, up to a point
    if p.returncode not in (0, 1) or info is None:
        print("  | " + "\n  | ".join(p.stderr.splitlines()[-20:]))
        res.update(status="FAIL", why=f"pytest exit status {p.returncode}")
        return
    counts = {k: sum(v == k for v in info["outcomes"].values()) for k in ("passed", "failed", "skipped")}
    res.update(selected=len(info["selected"]), **counts, tests=info["selected"])
    res["status"] = "FAIL" if p.returncode or counts["failed"] or not info["selected"] else "PASS"
    if res["status"] == "PASS" and device.type != "cuda" and counts["skipped"] == len(info["selected"]):
        res["status"], res["note"] = "NO-GPU", "no CUDA: every selected test skipped"
    print(f"  {res['selected']} CUDA tests selected: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped -> {res['status']}" + (f" ({res['note']})" if "note" in res else ""))


# ---- part 2: the same chip on CPU and CUDA ---------------------------------------------------------------------
def _chip_check(preset: str, device: torch.device) -> dict[str, float]:
    """CPU vs ``device``: the chip (printed with its verdict), then, for information, GDC factors and outputs."""
    cpu = torch.device("cpu")
    d = chip_distances(programmed(preset, cpu, 3, 86400.0), programmed(preset, device, 3, 86400.0))
    print(f"  {preset:<16} program + at_time(1 day, no GDC), in ulp of each matrix's largest value: "
          f"g_target {d['g_target_ulp']:.1f}, g_prog {d['g_prog_ulp']:.1f}, nu {d['nu_ulp']:.1f} (≤ {ULP_COND}); "
          f"effective weights {d['weight_ulp']:.1f} (≤ {ULP_WEIGHT}); seed buffers differing "
          f"{d['seeds_differing']:.0f} -> {'PASS' if chip_verdict(d) else 'FAIL'}")
    m_cpu, m_dev = programmed(preset, cpu, 3, 86400.0, gdc=True), programmed(preset, device, 3, 86400.0, gdc=True)
    alphas = [(x.analog.gdc_alpha.cpu(), y.analog.gdc_alpha.cpu()) for x, y in
              zip(m_cpu.modules(), m_dev.modules()) if hasattr(x, "analog")]
    d["gdc_alpha_max_rel_diff"] = max(float(((p - q).abs() / p.abs()).max()) for p, q in alphas)
    with torch.no_grad():
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        yc, yd = m_cpu(x), m_dev(x.to(device)).cpu()
    d["forward_rel_diff"] = float((yc - yd).norm() / yc.norm())
    print(f"  {'':<16} with GDC: factors differ by ≤ {d['gdc_alpha_max_rel_diff']:.2e} (relative), forward "
          f"outputs by {d['forward_rel_diff']:.2e} (torch.Generator periphery noise: not required equal)")
    return d


def part_equality(a: argparse.Namespace, device: torch.device, budget: Budget, res: dict) -> None:
    if device.type == "cpu":
        print("  (no CUDA: both sides on the CPU; this exercises the script, not a GPU)")
    r = rng_distances(device, 1 << (10 if a.tiny else 20))
    ok_rng = r["threefry_words_differing"] == 0 and r["uniform_ulp"] == 0 and r["normal_ulp"] <= ULP_NORMAL
    print(f"  aimc.rng: Threefry words differing {r['threefry_words_differing']:.0f} (must be 0), uniforms max "
          f"{r['uniform_ulp']:.0f} ulp (must be 0), normals max {r['normal_ulp']:.1f} ulp (≤ {ULP_NORMAL}) -> "
          f"{'PASS' if ok_rng else 'FAIL'}")
    res.update(rng=r, chips={}, failed=not ok_rng)
    for preset in ("joshi2020", "aihwkit_default", "hermes"):
        budget.check(f"the {preset} chip")
        d = _guarded(res["chips"], preset, lambda p=preset: _chip_check(p, device))
        res["failed"] |= d is None or not chip_verdict(d)
    res["status"] = "FAIL" if res["failed"] else "PASS"


# ---- parts 3 and 4: timings ------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _peak(device: torch.device, reset: bool = False) -> float:
    """Peak GPU memory allocated since the last reset, GiB (nan on CPU)."""
    if device.type != "cuda":
        return math.nan
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def time_model(build: Callable[[], nn.Module], x: torch.Tensor, preset: str, device: torch.device, repeats: int,
               budget: Budget) -> dict:
    """Plain forward (median of ``repeats``, peak memory), then convert in place, program, at_time(1 day, GDC), analog
    forward (median, peak memory over program + at_time + forward)."""
    import aimc

    model = build().eval()
    out: dict = {"params": sum(p.numel() for p in model.parameters())}
    with torch.inference_mode():
        _peak(device, reset=True)
        _timed(lambda: model(x), device)  # warm-up
        plain = [_timed(lambda: model(x), device) for _ in range(repeats)]
        out["plain_peak_gib"] = _peak(device)
    budget.check(f"{preset}: program, at_time and forward")
    # .to(device): the crossbar buffers convert adds are created on the CPU (a no-op for the master weights)
    model = aimc.convert(model, aimc.presets.get(preset), inplace=True).eval().to(device)
    _peak(device, reset=True)
    out["program_s"] = _timed(lambda: aimc.program(model, seed=0), device)
    out["at_time_s"] = _timed(lambda: aimc.at_time(model, 86400.0, seed=0, gdc=True), device)
    with torch.inference_mode():
        y = model(x)
        out["finite"] = bool(torch.isfinite(y).all())
        analog = [_timed(lambda: model(x), device) for _ in range(repeats)]
    out["analog_peak_gib"] = _peak(device)
    out["plain_forward_s"], out["analog_forward_s"] = statistics.median(plain), statistics.median(analog)
    out["forward_ratio"] = out["analog_forward_s"] / out["plain_forward_s"]
    out["peak_ratio"] = out["analog_peak_gib"] / out["plain_peak_gib"]
    return out  # the models go with this frame; the caller empties the CUDA cache


def _guarded(res: dict, key: str, fn: Callable[[], dict]) -> dict | None:
    """``res[key] = fn()``; an error (not the budget) is printed and recorded, and the part goes on (marked failed)."""
    try:
        res[key] = fn()
        return res[key]
    except OutOfBudget:
        raise
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stdout)
        print(f"  {key}: FAIL: {type(e).__name__}: {e}")
        res[key], res["failed"] = {"error": f"{type(e).__name__}: {e}"}, True
        return None


def _report(name: str, preset: str, r: dict) -> None:
    mem = ("n/a on CPU" if math.isnan(r["analog_peak_gib"]) else
           f"{r['analog_peak_gib']:.2f} GiB vs {r['plain_peak_gib']:.2f} GiB plain = {r['peak_ratio']:.2f}x")
    print(f"  {name} {preset:<16} program {r['program_s']:.2f} s, at_time(1 day, GDC) {r['at_time_s']:.2f} s, "
          f"forward {r['analog_forward_s'] * 1e3:.1f} ms vs {r['plain_forward_s'] * 1e3:.1f} ms plain = "
          f"{r['forward_ratio']:.2f}x; peak memory {mem}; outputs finite: {r['finite']}")


def resnet_inputs(a: argparse.Namespace, device: torch.device) -> tuple[Callable[[], nn.Module], torch.Tensor, str]:
    from aimc.data import cifar10, default_data_root
    from aimc.models import load_pretrained_resnet32, resnet32_cifar

    root = Path(a.data) if a.data else default_data_root()
    batch = 4 if a.tiny else 128
    if (root / "resnet32_cifar10.safetensors").is_file() and (root / "cifar10_test.npz").is_file():
        ds = cifar10("test", root=root)
        idx = torch.linspace(0, len(ds) - 1, batch).long()  # the file is sorted by class: spread over classes
        x = torch.stack([ds[int(i)][0] for i in idx])
        return (lambda: load_pretrained_resnet32(root / "resnet32_cifar10.safetensors").to(device),
                x.to(device), f"pretrained weights and {batch} CIFAR-10 test images from {root}")

    def build() -> nn.Module:
        torch.manual_seed(0)
        return resnet32_cifar().to(device)

    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    return build, x, f"random init and random inputs, batch {batch} (no pretrained weights/CIFAR-10 in {root})"


def part_resnet(a: argparse.Namespace, device: torch.device, budget: Budget, res: dict) -> None:
    build, x, what = resnet_inputs(a, device)
    print(f"  ResNet-32, {what}")
    res["inputs"] = what
    for preset in TIMED_PRESETS["resnet"]:
        budget.check(f"ResNet-32 {preset}", 5.0 if a.tiny else 20.0)
        r = _guarded(res, preset, lambda p=preset: time_model(build, x, p, device, a.repeats, budget))
        _empty_cache(device)
        if r:
            _report("ResNet-32", preset, r)
    res["status"] = "FAIL" if res.get("failed") else "RAN"


def part_llm(a: argparse.Namespace, device: torch.device, budget: Budget, res: dict) -> None:
    shapes = TINY_LLAMA if a.tiny else TINYLLAMA
    tokens = 16 if a.tiny else 128

    def build() -> nn.Module:
        torch.manual_seed(0)
        with torch.device(device):
            return Llama(**shapes)

    x = torch.randint(0, shapes["vocab"], (1, tokens), generator=torch.Generator().manual_seed(0)).to(device)
    print(f"  Llama-shaped model {shapes}, {tokens} tokens, random weights (embedding digital, every Linear analog)")
    res.update(shapes=shapes, tokens=tokens)
    for preset in TIMED_PRESETS["llm"]:
        r = _guarded(res, preset, lambda p=preset: time_model(build, x, p, device, a.repeats, budget))
        _empty_cache(device)
        if r:
            print(f"  {r['params'] / 1e6:.1f} M parameters")
            _report("Llama", preset, r)
    res["status"] = "FAIL" if res.get("failed") else "RAN"


# ---- main ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--pytest-child"]:
        return run_pytest_child(argv[1], argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Exit status: 0 ran (and checks passed), 1 a check failed, 2 no CUDA.")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (in this order)")
    ap.add_argument("--budget", type=float, default=480.0, help="wall-clock seconds for the whole run (default 480)")
    ap.add_argument("--allow-cpu", action="store_true", help="without CUDA: run a tiny version of every part on CPU")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes even on a GPU (smoke test)")
    ap.add_argument("--repeats", type=int, default=None, help="timed forwards per model (default 10; tiny 2)")
    ap.add_argument("--data", default=None, help="directory with resnet32_cifar10.safetensors and cifar10_test.npz")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        if not a.allow_cpu:
            print("gpu_check: no CUDA device (torch.cuda.is_available() is False, torch "
                  f"{torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a machine with an NVIDIA GPU "
                  "and a CUDA build of torch, or pass --allow-cpu for a tiny run of every part on the CPU (tests "
                  "the script only).", file=sys.stderr)
            return 2
        a.tiny = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a.repeats = a.repeats or (2 if a.tiny else 10)
    from bench_core import footer, header

    gpu = (f", GPU {torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}" if device.type == "cuda"
           else ", no GPU (CPU run)")
    header(settings=f"parts {a.parts}, budget {a.budget:.0f} s, repeats {a.repeats}" + (", tiny" if a.tiny else ""),
           machine_extra=gpu)
    budget = Budget(a.budget)
    funcs = {"tests": part_tests, "equality": part_equality, "resnet": part_resnet, "llm": part_llm}
    results: dict = {"command": [sys.executable, *sys.argv], "torch": torch.__version__, "device": str(device),
                     "gpu": gpu.lstrip(", "), "tiny": a.tiny, "budget_s": a.budget}
    for part in (p for p in PARTS if p in a.parts):
        print(f"\n[{part}]")
        t0 = time.perf_counter()
        res = results[part] = {}  # filled as the part goes: what ran before a budget stop is kept
        try:
            budget.check(f"part '{part}'", 0.0 if a.tiny else MIN_LEFT_S[part])
            with budget.alarm():
                funcs[part](a, device, budget, res)
        except OutOfBudget as e:
            print(f"  SKIPPED (rest of this part): {e}")
            res.update(status="FAIL" if res.get("failed") else "SKIPPED", why=str(e))
        except Exception as e:  # noqa: BLE001 - one broken part must not cost the others on a one-shot machine
            traceback.print_exc(file=sys.stdout)
            print(f"  FAIL: {type(e).__name__}: {e}")
            res.update(status="FAIL", why=f"{type(e).__name__}: {e}")
        res["wall_s"] = time.perf_counter() - t0
        if a.json:  # after every part: a run cut short still leaves what it measured
            Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    print("\nsummary: " + ", ".join(f"{p} {results[p]['status']} ({results[p]['wall_s']:.0f} s)" for p in PARTS
                                    if p in results))
    footer(budget.start)
    return 1 if any(results[p]["status"] == "FAIL" for p in PARTS if p in results) else 0


if __name__ == "__main__":
    sys.exit(main())
