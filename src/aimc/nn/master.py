"""The master weight as the devices see it: float32 at least, and a checksum that tells whether it changed.

``program`` stores the checksum of each matrix's master weight; ``at_time``, ``aimc.save`` and ``aimc.load``
regenerate the devices from that weight only when :func:`same_weight` says it is the one that was programmed.
"""

from __future__ import annotations

import torch

__all__ = ["master", "checksum", "same_weight"]

_CHECK_BLOCK = 1 << 20  # weights per block of the checksum (a float64 copy of 8 MB)


def master(w: torch.Tensor) -> torch.Tensor:
    """The master weight as float32 at least: conductances are never computed or held in bfloat16/float16 (the
    bfloat16 step near 25 µS is 0.125 µS, half the off-device's programming noise)."""
    w = w.detach()
    return w.float() if w.dtype in (torch.bfloat16, torch.float16) else w


def checksum(w: torch.Tensor) -> torch.Tensor:
    """``(2,)`` float64 (Σ w, Σ |w|) of ``w`` ``(out, rows)``: tells a master weight changed since programming.

    Summed over blocks of output rows of about 1 M weights (torch casts the whole operand to float64 first: a
    block at a time keeps that copy small); the block sums are then added, so a matrix of one block has the
    checksum it had before blocks existed. Summed on one thread on CPU: a parallel sum adds in another order, and
    a chip programmed at one thread count must be drifted, saved and loaded at any other."""
    if w.device.type != "cpu" or torch.get_num_threads() == 1:
        return _block_sums(w)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _block_sums(w)
    finally:
        torch.set_num_threads(n)


def same_weight(weight: torch.Tensor, check: torch.Tensor, sums: torch.Tensor | None = None) -> bool:
    """Whether the master ``weight`` ``(out, rows)`` is the one whose :func:`checksum` is ``check``; also accepts
    the parallel sum of the current thread count (states programmed before the checksum was summed on one
    thread). ``sums``: the weight's :func:`checksum` when the caller has it already."""
    w = master(weight)
    if torch.equal((checksum(w) if sums is None else sums).to(check.device), check):
        return True
    return w.device.type == "cpu" and torch.get_num_threads() > 1 and torch.equal(_block_sums(w), check.cpu())


def _block_sums(w: torch.Tensor) -> torch.Tensor:
    w = w.detach()
    step = max(1, _CHECK_BLOCK // max(w[0].numel(), 1)) if w.dim() else 1
    parts = [torch.stack([b.sum(dtype=torch.float64), torch.linalg.vector_norm(b, 1, dtype=torch.float64)])
             for b in (w.split(step) if w.dim() else [w])]
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)
