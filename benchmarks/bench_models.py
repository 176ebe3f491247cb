"""Supported-models table: analog share by execution and forward overhead of converted models, both presets.

For each model of ``tests/arch_models.py`` (module patterns of torchvision / Hugging Face / torch architectures,
random weights) and, when transformers is installed, tiny Hugging Face ``GPT2LMHeadModel``,
``BertForSequenceClassification`` and ``LlamaForCausalLM``:

* analog share of the matrix-product weights measured by execution (``aimc.audit``: every analog matrix's
  weights corrupted in turn must move the output; no master weight of an analog layer in any product), next to
  the share the conversion report states;
* forward time of the converted, programmed and drifted model (``torch.inference_mode``, eval) over the plain
  model's, for ``joshi2020`` and ``aihwkit_default``: median of the per-pair ratios, each analog timing paired with
  a plain timing right next to it (order alternating), 2 warm-up calls, N pairs.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_models.py            # batch 16, N = 15, 1 thread
    PYTHONPATH=src .venv/bin/python benchmarks/bench_models.py --quick    # smoke test (batch 2, N = 3)
    PYTHONPATH=src .venv/bin/python benchmarks/bench_models.py --only convnext_like,mobilenet_like

Prints a Markdown table (the README's "Supported models" table comes from it). Always exits 0.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the model builders live with the tests

from _paired import paired_ratio  # noqa: E402  (benchmarks/, the script's own folder)
import aimc  # noqa: E402
from tests.arch_models import ARCHITECTURES, build  # noqa: E402


def _hf_models(batch: int) -> dict:
    try:
        import transformers
    except ImportError:
        return {}
    ids = torch.randint(0, 64, (batch, 12), generator=torch.Generator().manual_seed(1))

    def make(cls, cfg):  # noqa: ANN001, ANN202
        def f():  # noqa: ANN202
            torch.manual_seed(0)
            return cls(cfg).eval(), (ids,)
        return f

    return {
        "hf GPT2LMHeadModel": make(transformers.GPT2LMHeadModel, transformers.GPT2Config(
            vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4)),
        "hf BertForSequenceClassification": make(transformers.BertForSequenceClassification, transformers.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, num_labels=3)),
        "hf LlamaForCausalLM": make(transformers.LlamaForCausalLM, transformers.LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=32)),
    }


def _ratio(plain, analog, x, n: int) -> float:  # noqa: ANN001
    with torch.inference_mode():
        return paired_ratio(lambda: plain(*x), lambda: analog(*x), n, warmup=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated model names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batch, n = (2, 3) if args.quick else (16, 15)
    print(f"# bench_models: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), batch {batch}, N = {n}")
    builders = {name: (lambda name=name: build(name, batch)) for name in ARCHITECTURES}
    builders.update(_hf_models(batch))
    if args.only:
        builders = {k: v for k, v in builders.items() if k in args.only.split(",")}
    print("| model | analog layers | analog share (execution) | report | verified matrices | forward joshi2020 "
          "| forward aihwkit_default |")
    print("|---|---|---|---|---|---|---|")
    for name, make in builders.items():
        plain, x = make()
        row = []
        for preset in (aimc.presets.joshi2020(), aimc.presets.aihwkit_default()):
            a = aimc.convert(plain, preset).eval()
            if not row:
                res = aimc.audit(a, *x)
                row = [len(a.aimc_report.analog), f"{100 * res.measured_share:.2f} %",
                       f"{100 * a.aimc_report.analog_share:.2f} %",
                       f"{sum(res.analog.values())}/{len(res.analog)}" + (" (leaks!)" if res.leaks else "")]
            aimc.program(a, seed=0)
            aimc.at_time(a, 86_400.0, seed=0)
            row.append(f"{_ratio(plain, a, x, n):.2f}x")
        print(f"| {name} | " + " | ".join(str(c) for c in row) + " |", flush=True)


if __name__ == "__main__":
    main()
