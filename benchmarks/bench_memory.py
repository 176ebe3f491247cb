"""Peak memory of a Llama-shaped model with the physics on, against the plain model (issue 20, item 2).

Each case runs in its own subprocess and reports its peak resident set size (VmHWM of /proc/self/status):

* plain: build the model (random weights), forward on ``--tokens`` tokens (no grad);
* analog: build, ``aimc.convert`` (a copy: the original is then dropped; with ``inplace=True`` where this aimc has
  it), ``aimc.program``, ``aimc.at_time`` to 1 day with GDC (cached weights in ``--cache-dtype``), the same
  forward. The peak is reported over the whole run and per phase (VmHWM reset before each phase via
  /proc/self/clear_refs), so a transient of convert, program, at_time or the forward shows where it happens.
* with ``--save``: after the peaks are taken, the plain case writes its ``state_dict`` with safetensors and the
  analog case ``aimc.save``s the programmed, drifted model; both file sizes are printed (files deleted after).

The model is ``benchmarks/_llama.py``'s stack of Llama blocks built from ``nn.Linear``/``nn.Embedding`` (RMSNorm,
causal attention with grouped key/value heads, SiLU-gated MLP, untied LM head); ``--preset tinyllama`` gives the 1.1 B shapes of
TinyLlama-1.1B (hidden 2048, 22 layers, intermediate 5632, 32 heads / 4 key-value heads, vocab 32000). Run it only
where free RAM allows (the 1.1 B plain model alone is 4.4 GB in float32). Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory.py --hidden 768 --layers 6 --intermediate 2048
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory.py --preset tinyllama --cache-dtype float16
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory.py --preset tinyllama --dtype bfloat16
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _llama import TINYLLAMA, Llama  # noqa: E402

SHAPES = {"tinyllama": TINYLLAMA}


def _status(field: str) -> float:
    """A /proc/self/status field in GiB (VmHWM: peak RSS, VmRSS: current)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return math.nan


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_case(args: argparse.Namespace) -> dict:
    import aimc

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = Llama(args.hidden, args.layers, args.intermediate, args.heads, args.kv_heads, args.vocab).to(dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, args.vocab, (1, args.tokens))
    out: dict = {"case": args.case, "params": n_params, "dtype": args.dtype, "phases": {}}
    out["peak_reset"] = _reset_peak()
    times = {}

    def phase(name: str, fn) -> None:  # noqa: ANN001
        t = time.perf_counter()
        fn()
        times[name + "_s"] = time.perf_counter() - t
        out["phases"][name] = _status("VmHWM")  # peak of this phase (of the run so far where reset fails)
        _reset_peak()

    if args.case == "analog":
        cfg = aimc.presets.get(args.config)
        inplace = "inplace" in inspect.signature(aimc.convert).parameters
        out["inplace_convert"] = inplace
        box = {}

        def convert() -> None:
            nonlocal model
            if inplace:
                model = aimc.convert(model, cfg, inplace=True)
            else:
                copy = aimc.convert(model, cfg)
                model = None
                gc.collect()
                model = copy
            model.eval()

        phase("convert", convert)
        phase("program", lambda: aimc.program(model, seed=0))
        kw = {"cache_dtype": getattr(torch, args.cache_dtype)} if args.cache_dtype != "default" else {}
        phase("at_time", lambda: aimc.at_time(model, 86400.0, seed=0, gdc=True, **kw))
        mem = aimc.inference.device_state_bytes(model)
        out["cache_bytes_per_weight"], out["analog_weights"] = mem["cache_bytes_per_weight"], mem["weights"]
    box = {}

    def forward() -> None:
        with torch.no_grad():
            box["y"] = model(tokens)
        ts = []
        for _ in range(args.forward_repeats - 1):  # the time is the median of the first and these
            t = time.perf_counter()
            with torch.no_grad():
                model(tokens)
            ts.append(time.perf_counter() - t)
        box["ts"] = ts

    phase("forward", forward)
    times["forward_s"] = statistics.median([times["forward_s"] - sum(box["ts"]), *box["ts"]])
    out["finite"] = bool(torch.isfinite(box["y"]).all())
    out.update(times)
    out["peak_gib"] = max(out["phases"].values())
    out["rss_end_gib"] = _status("VmRSS")
    if args.save:
        with tempfile.TemporaryDirectory(dir=args.save) as d:
            path = Path(d) / "model.safetensors"
            t = time.perf_counter()
            if args.case == "analog":
                aimc.save(model, path)
            else:
                from safetensors.torch import save_file
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
            out["save_s"] = time.perf_counter() - t
            out["file_bytes"] = path.stat().st_size
            out["phases"]["save"] = _status("VmHWM")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(SHAPES), default=None, help="model shapes (overrides the sizes)")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--kv-heads", type=int, default=None, help="key/value heads (default: --heads)")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="master weights")
    ap.add_argument("--cache-dtype", choices=["default", "float32", "float16"], default="default",
                    help="aimc.at_time(cache_dtype=...) of the analog case (default: aimc's, float32)")
    ap.add_argument("--config", default="joshi2020", help="aimc preset of the analog case")
    ap.add_argument("--forward-repeats", type=int, default=3, help="forwards timed (median; the peak covers all)")
    ap.add_argument("--save", default=None, help="a directory: also measure the saved file sizes there")
    ap.add_argument("--case", choices=["plain", "analog"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.preset:
        for k, v in SHAPES[args.preset].items():
            setattr(args, k, v)
    args.kv_heads = args.kv_heads or args.heads
    if args.save:  # the files are written (and deleted) in a temporary folder inside it
        Path(args.save).mkdir(parents=True, exist_ok=True)
    if args.case:
        print(json.dumps(run_case(args)))
        return
    print(f"# {' '.join(sys.argv)}")
    print(f"# load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    res = {}
    for case in ("plain", "analog"):
        cmd = [sys.executable, __file__, "--case", case] + [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                                                            ("hidden", "layers", "intermediate", "vocab", "heads",
                                                             "kv_heads", "tokens", "dtype", "cache_dtype", "config",
                                                             "forward_repeats")]
        if args.save:
            cmd.append(f"--save={args.save}")
        p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if p.returncode:
            sys.exit(f"{case} case failed:\n{p.stderr[-3000:]}")
        res[case] = json.loads(p.stdout.strip().splitlines()[-1])
    pl, an = res["plain"], res["analog"]
    ph = an["phases"]
    print(f"Llama-shaped model: {pl['params'] / 1e6:.1f} M parameters (hidden {args.hidden}, {args.layers} layers, "
          f"intermediate {args.intermediate}, {args.heads} heads / {args.kv_heads} kv heads, vocab {args.vocab}), "
          f"{args.dtype} master weights, {args.tokens} tokens, config {args.config} (embedding digital, every "
          f"Linear analog), cached weights {args.cache_dtype} ({an['cache_bytes_per_weight']:.0f} B per analog "
          "weight)")
    print(f"  plain : peak RSS {pl['peak_gib']:.2f} GiB (forward {pl['forward_s']:.2f} s)")
    print(f"  analog: peak RSS {an['peak_gib']:.2f} GiB = {an['peak_gib'] / pl['peak_gib']:.2f}x plain; per phase: "
          + ", ".join(f"{k} {v:.2f} GiB" for k, v in ph.items() if k != "save")
          + ("" if an["peak_reset"] else " (VmHWM could not be reset: each is the peak so far)"))
    print(f"          convert ({'in place' if an['inplace_convert'] else 'copy, original dropped'}) "
          f"{an['convert_s']:.1f} s, program {an['program_s']:.1f} s, at_time(1 day, GDC) {an['at_time_s']:.1f} s, "
          f"forward {an['forward_s']:.2f} s ({an['forward_s'] / pl['forward_s']:.2f}x plain, medians of "
          f"{args.forward_repeats}); end RSS "
          f"{an['rss_end_gib']:.2f} GiB; outputs finite: {an['finite']}")
    if args.save:
        print(f"  files : plain safetensors {pl['file_bytes'] / 1e6:.1f} MB, aimc.save {an['file_bytes'] / 1e6:.1f} MB "
              f"({an['file_bytes'] / pl['file_bytes']:.3f}x); save {an['save_s']:.1f} s, peak RSS while saving "
              f"{an['phases']['save']:.2f} GiB (plain {pl['phases']['save']:.2f} GiB)")
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
