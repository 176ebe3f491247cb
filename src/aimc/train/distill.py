"""Distillation from the digital model: the loss of the Analog Foundation Models recipe (Büchel et al., 2025).

The student is the converted (analog, hardware-aware-training) model, the teacher the original digital model. Per
token position p (the positions whose next token is scored), with z the logits and T the temperature:

    KL_p = Σ_v softmax(z_teacher/T)_v · (log softmax(z_teacher/T)_v − log softmax(z_student/T)_v)
    L    = (1 − β)·LM + β·T²·mean_p KL_p

LM is the usual shifted next-token cross-entropy of the student (labels −100 ignored). T² keeps the gradient's
size independent of T (Hinton et al., 2015). AFM uses T = 1, β = 1 (pure distillation); the defaults come from
``TrainingConfig.distill_temperature`` / ``distill_beta``. One training step::

    loss = aimc.train.distill_step(analog, digital, batch, opt)   # forward both, backward, step, aimc.clip
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aimc.errors import ConfigError, ShapeError

__all__ = ["distillation_loss", "distill_step"]


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor | None = None,
                      *, temperature: float = 1.0, beta: float = 1.0, ignore_index: int = -100) -> torch.Tensor:
    """The distillation loss of the module docstring (0-d tensor, differentiable w.r.t. ``student_logits``).

    Args:
        student_logits: ``(batch, tokens, vocab)`` logits of the analog model.
        teacher_logits: the digital model's logits, same shape (treated as constants).
        labels: ``(batch, tokens)`` token ids (unshifted, as Hugging Face models take them; position t+1 is the
            target of position t); −100 marks tokens not scored. Needed when ``beta < 1``; with ``beta = 1`` it
            only selects the scored positions (all but the last of each row when ``None``).
        temperature: T > 0.
        beta: weight of the distillation term, in [0, 1].
        ignore_index: label value that is not scored.
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise ShapeError(f"student and teacher logits must both be (batch, tokens, vocab); got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}.")
    if not temperature > 0:
        raise ConfigError(f"temperature={temperature!r} must be > 0.")
    if not 0 <= beta <= 1:
        raise ConfigError(f"beta={beta!r} must be in [0, 1].")
    if labels is None and beta < 1:
        raise ConfigError("beta < 1 mixes in the language-model loss, which needs labels; pass labels=.")
    s, t = student_logits[:, :-1], teacher_logits[:, :-1].detach()
    if labels is not None:
        if labels.shape != student_logits.shape[:2]:
            raise ShapeError(f"labels must be (batch, tokens) = {tuple(student_logits.shape[:2])}, got "
                             f"{tuple(labels.shape)}.")
        target = labels[:, 1:]
        mask = target != ignore_index
    else:
        target, mask = None, torch.ones(s.shape[:2], dtype=torch.bool, device=s.device)
    n = mask.sum().clamp_min(1)
    log_ps = F.log_softmax(s.float() / temperature, dim=-1)
    log_pt = F.log_softmax(t.float() / temperature, dim=-1)
    kl_tok = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    kl = (kl_tok * mask).sum() / n * temperature**2
    if beta == 1:
        return kl
    lm = F.cross_entropy(s.float().reshape(-1, s.shape[-1]), target.reshape(-1), ignore_index=ignore_index)
    return (1 - beta) * lm + beta * kl


def _logits(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


def distill_step(student: nn.Module, teacher: nn.Module, batch: dict[str, torch.Tensor],
                 optimizer: torch.optim.Optimizer, *, temperature: float | None = None,
                 beta: float | None = None) -> float:
    """One hardware-aware training step with distillation: forward, backward, ``optimizer.step()``, ``aimc.clip``.

    The student runs in training mode (fresh weight noise, learned input ranges); the teacher in eval mode under
    ``torch.no_grad``. ``temperature``/``beta`` default to the student's ``TrainingConfig``
    (``distill_temperature``, ``distill_beta``).

    Args:
        student: the converted model being trained.
        teacher: the digital model (not changed).
        batch: ``{"input_ids": (batch, tokens), ...}``, optionally ``"labels"`` and ``"attention_mask"``.
        optimizer: over the student's parameters.

    Returns:
        The loss (float) of this step.
    """
    from aimc.train.hwa import clip

    cfg = getattr(student, "aimc_config", None)
    if cfg is None:
        raise ConfigError("distill_step trains a converted model (aimc.convert); the student has no aimc_config.")
    temperature = cfg.training.distill_temperature if temperature is None else temperature
    beta = cfg.training.distill_beta if beta is None else beta
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    teacher_mode = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            t_logits = _logits(teacher(**inputs))
    finally:
        teacher.train(teacher_mode)
    student.train()
    s_logits = _logits(student(**inputs))
    loss = distillation_loss(s_logits, t_logits, batch.get("labels"), temperature=temperature, beta=beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    clip(student)
    return float(loss.detach())
