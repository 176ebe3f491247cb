"""Training stages of a run: FP or hardware-aware, checkpointed after every epoch, resumed bit-identically."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from aimc.evaluation import score
from aimc.experiment.build import plain_state
from aimc.experiment.context import RunContext
from aimc.experiment.spec import StageSpec
from aimc._files import atomic_write
from aimc.experiment.store import load_checkpoint, save_checkpoint
from aimc.nn.convert import convert
from aimc.nn.tile import derive_seed
from aimc.train.hwa import clip

__all__ = ["train_stage"]

log = logging.getLogger("aimc.run")


def _optimizer(stage: StageSpec, params) -> torch.optim.Optimizer:  # noqa: ANN001
    o = stage.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov and o.momentum > 0)
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def _scheduler(stage: StageSpec, opt: torch.optim.Optimizer):  # noqa: ANN202
    s = stage.schedule
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(stage.epochs, 1))
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0)


def train_stage(ctx: RunContext, stage: StageSpec, progress) -> None:  # noqa: ANN001
    from safetensors.torch import save_file

    final = ctx.stage_path(stage.name)
    if final.exists():
        log.info("stage %s: done before, using %s", stage.name, final)
        return
    model = ctx.weights(stage.init)
    if stage.kind == "hwa":
        model = convert(model, ctx.exp.stage_config(stage))
    dd = ctx.dist  # under DDP: forward through the wrapper, only rank 0 writes, the others wait at barriers
    net, main = (model, True) if dd is None else (dd.wrap(model), dd.main)
    opt = _optimizer(stage, model.parameters())
    sched = _scheduler(stage, opt)
    ckpt = ctx.out / "checkpoints" / stage.name / "last.safetensors"
    start, history = 0, []
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, history = state["epoch"], state["extra"].get("history", [])
        log.info("stage %s: resuming after epoch %d from %s", stage.name, start, ckpt)
    sp = ctx.splits
    bs = ctx.exp.data.batch_size
    task = progress.add(f"stage {stage.name} ({stage.kind})", stage.epochs, start)
    for epoch in range(start, stage.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(ctx.exp.seed, stage.name, epoch, "noise") + (dd.rank if dd else 0))
        order = derive_seed(ctx.exp.seed, stage.name, epoch, "order") % 2**62
        loader = sp.loader("train", bs, seed=order) if dd is None else dd.loader(sp.train, bs, order)
        net.train()
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(ctx.device), y.to(ctx.device)
            loss = F.cross_entropy(net(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"stage {stage.name}, epoch {epoch + 1}: the loss is {float(loss)}; "
                                         "lower the learning rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if stage.kind == "hwa":
                clip(model)
            total += float(loss.detach()) * len(y)
            n += len(y)
        sched.step()
        if dd is not None:
            total, n = dd.all_sum([total, n])
        rec: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(n, 1), "lr": opt.param_groups[0]["lr"],
                               "seconds": time.perf_counter() - t0}
        if sp.val is not None and main:
            m = ctx.exp.scorer()  # val_accuracy, val_top5, ...: the run's metric on the held-out images
            rec[f"val_{m.name}"] = score(model.eval(), sp.loader("val", ctx.exp.data.eval_batch_size), m)
        history.append(rec)
        t1 = time.perf_counter()
        if main:
            save_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched, epoch=epoch + 1,
                            extra={"history": history})
        if dd is not None:
            dd.barrier()  # every rank leaves the epoch with the checkpoint on disk
        rec["checkpoint_seconds"] = time.perf_counter() - t1
        log.info("stage %s epoch %d/%d: %s", stage.name, epoch + 1, stage.epochs,
                 ", ".join(f"{k} {v:.4g}" for k, v in rec.items() if k != "epoch"))
        progress.advance(task)
    if main:
        sd = plain_state(model, ctx.plain_keys)
        # one metadata entry: safetensors orders several by hash, and the same weights should give the same file
        meta = {"aimc_stage": json.dumps({"stage": stage.name, "history": history}, sort_keys=True)}
        atomic_write(final, lambda tmp: save_file(sd, tmp, metadata=meta))
        if stage.kind == "hwa":
            from aimc.io import save

            save(model, ctx.out / "stages" / f"{stage.name}.aimc.safetensors")
    if dd is not None:
        dd.barrier()  # the next stage reads this one's weights on every rank
    log.info("stage %s: finished, weights in %s", stage.name, final)
