"""What :func:`aimc.evaluate` scores: top-k accuracy, perplexity / token NLL of causal language models, or any
``metric(output, batch) -> (sum, count)``; and how a batch reaches the model.

Batches (what the data iterable yields):

* a tuple/list ``(inputs, labels, ...)``: the model is called as ``model(inputs)``;
* a dict (Hugging Face style, e.g. ``{"input_ids": ..., "attention_mask": ..., "labels": ...}``): the model is
  called as ``model(**batch)`` without the ``"labels"``/``"label"`` entries (so a Hugging Face model does not
  compute its own loss), and those are the labels;
* a tensor: ``model(tensor)``, no labels (enough for perplexity, where the labels are the input tokens).

Model outputs may be a tensor, a tuple/list (its first element), a dict with ``"logits"`` or an object with a
``.logits`` attribute (Hugging Face ``ModelOutput``; transformers need not be installed).

A metric returns a ``(sum, count)`` pair per batch; the score is ``finalize(Σ sum / Σ count)`` over the whole data
set, so every sample (or token) weighs the same whatever the batch sizes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aimc.errors import ConfigError, DataError

__all__ = ["Metric", "get_metric", "top_k", "perplexity", "token_nll", "split_batch", "move_batch", "model_inputs",
           "batch_size", "float_dtype", "logits_of", "IGNORE_INDEX", "LABEL_KEYS"]

IGNORE_INDEX = -100
"""Label value that is not scored (Hugging Face's and ``F.cross_entropy``'s convention: padding, prompt tokens)."""

LABEL_KEYS = ("labels", "label")
"""Keys of a dict batch that hold labels; they are not passed to the model."""


@dataclass(frozen=True)
class Metric:
    """A named score: ``fn(output, batch) -> (sum, count)`` per batch, reported as ``finalize(Σsum / Σcount)``.

    Attributes:
        name: column name in the results table (e.g. ``"accuracy"``, ``"top5"``, ``"perplexity"``).
        fn: per-batch ``(sum, count)``; ``batch`` is the batch as the data yields it, on the model's device.
        higher_is_better: ``True``/``False``, or ``None`` when not known (a plain callable).
        percent: a fraction shown in % (accuracies).
        finalize: maps the mean ``Σsum / Σcount`` to the reported value (``math.exp`` for perplexity).
        label: human-readable name for tables and plots.
    """

    name: str
    fn: Callable[[Any, Any], tuple[float, int]]
    higher_is_better: bool | None = True
    percent: bool = False
    finalize: Callable[[float], float] | None = None
    label: str = ""

    @property
    def title(self) -> str:
        """Label with unit, e.g. ``"accuracy (%)"``, ``"perplexity"``."""
        return (self.label or self.name) + (" (%)" if self.percent else "")

    @property
    def direction(self) -> str:
        """``"higher is better"``, ``"lower is better"`` or ``""``."""
        return {True: "higher is better", False: "lower is better"}.get(self.higher_is_better, "")

    def value(self, total: float, count: int) -> float:
        """The reported score of accumulated ``(total, count)``."""
        if count == 0:
            raise DataError(f"metric {self.name!r} counted nothing over the whole data set (no samples, or every "
                            f"label is the ignore index {IGNORE_INDEX}); pass data with labels to score.")
        mean = total / count
        return float(self.finalize(mean)) if self.finalize is not None else float(mean)


# ---- batches and outputs ---------------------------------------------------------------------------------------
def split_batch(batch: Any) -> tuple[tuple, dict[str, Any], Any]:
    """``(positional inputs, keyword inputs, labels or None)`` of a batch (see the module docstring)."""
    if isinstance(batch, Mapping):
        kwargs = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
        if not kwargs:
            raise DataError(f"a dict batch holds only labels (keys {list(batch)}); it needs the model's inputs "
                            "too, e.g. {'input_ids': ..., 'labels': ...}.")
        labels = batch["labels"] if "labels" in batch else batch.get("label")
        return (), kwargs, labels
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise DataError("a batch is an empty tuple; yield (inputs, labels) batches.")
        return (batch[0],), {}, (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, torch.Tensor):
        return (batch,), {}, None
    raise DataError(f"a batch is a {type(batch).__name__}; yield (inputs, labels) tuples, dicts of tensors such as "
                    "{'input_ids': ..., 'labels': ...}, or input tensors (e.g. a DataLoader over a TensorDataset).")


def move_batch(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (in tuples, lists and dicts, one level deep) on ``device``; numpy arrays become
    tensors (same dtype: :func:`model_inputs` then casts floating inputs to the model's dtype)."""
    def mv(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(v)
        return v.to(device) if isinstance(v, torch.Tensor) else v

    if isinstance(batch, Mapping):
        return {k: mv(v) for k, v in batch.items()}
    if isinstance(batch, list):
        return [mv(v) for v in batch]
    if isinstance(batch, tuple):
        return tuple(mv(v) for v in batch)
    return mv(batch)


def model_inputs(batch: Any, dtype: torch.dtype | None, *, channels_last: bool = False,
                 n: int | None = None) -> tuple[tuple, dict[str, Any]]:
    """Positional and keyword inputs of a batch for the model (labels left out).

    Floating-point inputs are cast to ``dtype`` (the model's floating dtype): a float64 array from numpy fed to a
    float32 model is what users pass by accident, and the rounding to float32 (relative 6e-8) is far below any
    analog noise. Integer inputs (token ids, masks) are left as they are. ``channels_last``: 4-d floating inputs in
    channels-last memory format. ``n``: keep the first ``n`` samples (dim 0) of every input tensor.
    """
    args, kwargs, _ = split_batch(batch)

    def prep(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        if n is not None and v.dim() > 0:
            v = v[:n]
        if v.is_floating_point():
            if dtype is not None and v.dtype != dtype:
                v = v.to(dtype)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        return v

    return tuple(prep(a) for a in args), {k: prep(v) for k, v in kwargs.items()}


def float_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (``None`` if it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def batch_size(args: tuple, kwargs: dict[str, Any]) -> int:
    """Samples in a batch: dim 0 of its first input tensor."""
    for v in (*args, *kwargs.values()):
        if isinstance(v, torch.Tensor):
            return int(v.shape[0]) if v.dim() > 0 else 1
    raise DataError("a batch holds no input tensor; yield (inputs, labels) tuples or dicts of tensors.")


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output: the tensor itself, ``output["logits"]``, ``output.logits``, or ``output[0]``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(f"cannot find logits in the model output (a {type(output).__name__}); the model should return a "
                    "tensor, a tuple whose first element is the logits, a dict with 'logits' or an object with a "
                    ".logits attribute. Otherwise pass metric=<callable(output, batch) -> (sum, count)>.")


def _int_labels(y: Any, what: str) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise DataError(f"{what}: the labels are a {type(y).__name__}, expected an integer tensor of class indices.")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise DataError(f"{what}: the labels have dtype {y.dtype}; expected integer class indices (torch.int64). "
                        "Float or one-hot labels score nothing: convert them, e.g. labels.long() or "
                        "labels.argmax(-1).")
    return y


def _check_range(y: torch.Tensor, n_classes: int, what: str) -> None:
    valid = y[y != IGNORE_INDEX]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= n_classes):
        raise DataError(f"{what}: labels range from {int(valid.min())} to {int(valid.max())}, but the model outputs "
                        f"{n_classes} classes (valid labels 0 … {n_classes - 1}, or {IGNORE_INDEX} to skip one). "
                        "Check that the data and the model's number of classes match.")


# ---- built-in metrics ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _TopK:
    """Top-k accuracy: a sample is right when its label is among the k largest logits."""

    k: int

    def __call__(self, output: Any, batch: Any) -> tuple[float, int]:
        what = "accuracy" if self.k == 1 else f"top-{self.k} accuracy"
        logits = logits_of(output)
        y = split_batch(batch)[2]
        if y is None:
            raise DataError(f"{what} needs labels: yield (inputs, labels) batches or dicts with 'labels'.")
        y = _int_labels(y, what)
        if logits.dim() < 2 or tuple(logits.shape[:-1]) != tuple(y.shape):
            raise DataError(f"model output has shape {tuple(logits.shape)}, expected (batch, classes) with "
                            f"batch = {len(y)} labels (or (*, classes) for labels of shape (*)); labels have shape "
                            f"{tuple(y.shape)}.")
        n_classes = logits.shape[-1]
        _check_range(y, n_classes, what)
        if self.k > n_classes:
            raise DataError(f"{what} needs at least {self.k} classes; the model outputs {n_classes}.")
        logits, y = logits.reshape(-1, n_classes), y.reshape(-1)
        keep = y != IGNORE_INDEX
        if self.k == 1:
            hit = logits.argmax(dim=1) == y
        else:
            hit = (logits.topk(self.k, dim=1).indices == y[:, None]).any(dim=1)
        return int((hit & keep).sum()), int(keep.sum())


@dataclass(frozen=True)
class _TokenNLL:
    """Summed negative log-likelihood (nats) of the next token and the number of scored tokens."""

    shift: bool = True

    def __call__(self, output: Any, batch: Any) -> tuple[float, int]:
        logits = logits_of(output)
        args, kwargs, labels = split_batch(batch)
        inputs = kwargs.get("input_ids", args[0] if args else None)
        if labels is None:  # causal LM: the labels are the input tokens; padding (attention_mask 0) is not scored
            if not isinstance(inputs, torch.Tensor):
                raise DataError("perplexity needs token ids: yield dicts with 'input_ids' (and 'labels'), or "
                                "(input_ids, labels) tuples, or input_ids tensors.")
            labels = _int_labels(inputs, "perplexity (labels taken from the input tokens)")
            mask = kwargs.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.shape == labels.shape:
                labels = labels.masked_fill(mask == 0, IGNORE_INDEX)
        labels = _int_labels(labels, "perplexity")
        if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(labels.shape):
            raise DataError(f"perplexity expects logits (batch, tokens, vocabulary) and labels (batch, tokens); got "
                            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}.")
        if (self.shift and isinstance(inputs, torch.Tensor) and inputs is not labels and inputs.shape == labels.shape
                and labels.shape[1] > 1 and not torch.equal(inputs, labels)
                and torch.equal(labels[:, :-1], inputs[:, 1:])):
            raise DataError("the labels are already the next tokens (labels[:, :-1] == inputs[:, 1:]); metrics "
                            "'perplexity' and 'nll' follow Hugging Face and shift labels aligned with the inputs "
                            "themselves. For pre-shifted targets pass metric=aimc.metrics.perplexity(shift=False) "
                            "(or aimc.metrics.token_nll(shift=False)).")
        if self.shift:  # position i predicts token i + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        vocab = logits.shape[-1]
        _check_range(labels, vocab, "perplexity")
        nll = F.cross_entropy(logits.reshape(-1, vocab).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                              reduction="none")
        return float(nll.double().sum()), int((labels != IGNORE_INDEX).sum())


def top_k(k: int = 1) -> Metric:
    """Top-k accuracy (fraction; ``name`` ``"accuracy"`` for k = 1, else ``"top{k}"``). Labels: integer class
    indices ``(batch,)`` for logits ``(batch, classes)`` (or ``(*)`` for ``(*, classes)``); -100 is skipped."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"top-k accuracy needs an integer k ≥ 1, got {k!r}.")
    return Metric("accuracy" if k == 1 else f"top{k}", _TopK(k), True, True,
                  label="accuracy" if k == 1 else f"top-{k} accuracy")


def perplexity(shift: bool = True) -> Metric:
    """Perplexity of a causal language model: ``exp`` of the mean next-token NLL over all scored tokens.

    Logits ``(batch, tokens, vocabulary)``; labels ``(batch, tokens)`` aligned with the inputs (Hugging Face's
    convention: position i is scored against label i + 1), -100 not scored; without labels the input tokens are
    the labels, with padding (``attention_mask == 0``) not scored. ``shift=False``: labels are already the next
    tokens (``y[i] = x[i + 1]``, as character-level data sets often yield them).
    """
    return Metric("perplexity", _TokenNLL(bool(shift)), False, False, math.exp, label="perplexity")


def token_nll(shift: bool = True) -> Metric:
    """Mean next-token negative log-likelihood in nats (the log of :func:`perplexity`); same labels."""
    return Metric("nll", _TokenNLL(bool(shift)), False, False, label="mean token NLL (nats)")


_NAMES = "'accuracy' (= 'top1'), 'top5' (any 'topK'), 'perplexity', 'nll', a callable or an aimc.metrics.Metric"


def get_metric(metric: str | Callable | Metric) -> Metric:
    """A :class:`Metric` from a name (``"accuracy"``, ``"topK"``, ``"perplexity"``, ``"nll"``), a ``Metric``, or a
    callable ``metric(output, batch) -> (sum, count)`` (named after the callable, direction unknown: wrap it in
    :class:`Metric` to say ``higher_is_better``)."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        name = metric.strip().lower()
        if name in ("accuracy", "acc", "top1"):
            return top_k(1)
        if (m := re.fullmatch(r"top-?(\d+)", name)) and int(m.group(1)) >= 1:
            return top_k(int(m.group(1)))
        if name in ("perplexity", "ppl"):
            return perplexity()
        if name in ("nll", "token_nll"):
            return token_nll()
        raise ConfigError(f"unknown metric {metric!r}; choose {_NAMES}.")
    if callable(metric):
        name = getattr(metric, "__name__", None) or type(metric).__name__
        return Metric(name, metric, None, False, label=name)
    raise ConfigError(f"metric={metric!r} is not a metric; pass {_NAMES}.")
