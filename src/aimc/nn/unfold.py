"""Unfolded columns of a convolution, and its matrix path with the output periphery run once on the whole batch.

:func:`batched_forward` is the matrix path of an ungrouped convolution (any number of row and column tiles)
without an autograd graph. Same semantics as
:func:`aimc.nn.mvm.tiles_forward` (and the reference :func:`aimc.periphery.tiled_mvm`), in another order:

1. the output noise of every row tile is drawn for the whole batch (:func:`aimc.nn.parallel_normal.normal_`);
2. the batch runs a few images at a time (their columns stay in the CPU cache): unfold and divide by the DAC
   divisor in one pass, round, and add the product of all column tiles (they share the row tile's inputs) onto the
   chunk's slice of the noise. With several torch threads
   the chunks run on that many threads at once, each on one core: their work is independent (no random numbers,
   no host reads), so no thread waits at a barrier and the numbers do not depend on the thread count;
3. per row tile, on the whole batch: bound-management check per column tile, re-reads of the clipped vectors
   (one :func:`aimc.periphery.block_mvm` call per tile for all of them, so the random numbers do not depend on the chunk size
   either), ADC rounding, × input range × ADC step × digital scale, sum over row tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from aimc.nn.mvm import _clips, _dac_codes, _mvm_noisy, adc_unit, out_noise_std
from aimc.nn.parallel_normal import normal_, worker_pool
from aimc.periphery import block_mvm, bm_may_retry, dac_step

__all__ = ["batched_forward"]

def _patches(x: torch.Tensor, k: tuple[int, int], dil: tuple[int, int], st: tuple[int, int], ho: int,
             wo: int) -> torch.Tensor:
    """The patches of a padded ``(B, C, H, W)`` input as a strided view ``(B, C, kh, kw, ho, wo)`` (no copy)."""
    x = x.contiguous()
    sb, sc, sh, sw = x.stride()
    return x.as_strided((x.shape[0], x.shape[1], k[0], k[1], ho, wo),
                        (sb, sc, dil[0] * sh, dil[1] * sw, st[0] * sh, st[1] * sw), x.storage_offset())


def _unfold(x: torch.Tensor, k: tuple[int, int], dil: tuple[int, int], st: tuple[int, int], ho: int,
            wo: int) -> torch.Tensor:
    """``F.unfold(x, k, dilation=dil, stride=st)`` of a padded ``(B, C, H, W)`` input as one strided copy.

    The same values in the same layout ``(B, C·kh·kw, ho·wo)``; ATen's im2col costs about ten times this copy on
    the small batches the matrix path works on.
    """
    return _patches(x, k, dil, st, ho, wo).reshape(x.shape[0], x.shape[1] * k[0] * k[1], ho * wo)


def _run_lanes(lane: Callable[[int, int], None], lanes: int) -> None:
    """``lane(j, lanes)`` for j = 0 … lanes − 1, each on its own thread at one torch thread (the caller runs j = 0);
    the caller's thread count, inference and grad modes are restored / passed on."""
    if lanes == 1:
        lane(0, 1)
        return
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def task(j: int) -> None:
        torch.set_num_threads(1)  # this thread's own setting (OpenMP and MKL keep it per thread)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            lane(j, lanes)

    threads = torch.get_num_threads()
    futures = [worker_pool().submit(task, j) for j in range(1, lanes)]
    torch.set_num_threads(1)
    try:
        lane(0, lanes)
    finally:
        torch.set_num_threads(threads)
        for f in futures:
            f.result()


def batched_forward(layer, x: torch.Tensor, pads: tuple[int, int, int, int], k: tuple[int, int],  # noqa: ANN001
                    dil: tuple[int, int], st: tuple[int, int], ho: int, wo: int, step: int,
                    scale: Callable[[int], torch.Tensor] | None) -> torch.Tensor:
    """The matrix path of an ungrouped convolution (see the module docstring).

    Args:
        layer: the analog convolution (``groups == 1``).
        x: ``(B, C, H, W)`` input: unpadded when ``pads`` (zero padding) are given, else already padded.
        pads: zero padding (left, right, top, bottom).
        k, dil, st: kernel size, dilation and stride (2-d; a Conv1d has height 1).
        ho, wo: output size.
        step: images per chunk.
        scale: dynamic ranges: ``row tile -> (B, 1, ho·wo)`` per-patch abs-max of the tile's inputs (positive);
            ``None`` for a static range.

    Returns:
        ``(B, out_channels, ho·wo)`` without the bias.
    """
    mat = layer.analog
    lay, p, gen = mat.layout, mat.config.periphery, mat._forward_gen
    b, c, h, w = x.shape
    pl, pr, pt, pb = pads
    padded_shape = (c, h + pt + pb, w + pl + pr)
    kk, n_l, n_rt = k[0] * k[1], ho * wo, len(lay.row_bounds)
    static = mat.static_range(layer.aimc_name) if scale is None else None
    dac = dac_step(p.dac_bits) if p.dac_bits is not None else None
    levels = (2**p.dac_bits - 2) // 2 if p.dac_bits is not None and static is not None else None
    unit, std = adc_unit(p), out_noise_std(p)
    alpha = (dac if dac is not None else 1.0) / unit
    # 1. each row tile's output (in ADC steps) starts as its noise
    y = x.new_empty(b, lay.out_features, n_l)
    extra = x.new_empty(n_rt - 1, b, lay.out_features, n_l) if n_rt > 1 else None
    if std > 0:
        normal_(y, std, gen)
        if extra is not None:
            normal_(extra, std, gen)
    parts = [y] + (list(extra) if extra is not None else [])
    divisors = [scale(t) * dac if dac is not None else scale(t) for t in range(n_rt)] if scale is not None else None

    # 2. DAC and products, chunk by chunk
    def lane(j: int, lanes: int) -> None:
        padded = x.new_zeros(step, *padded_shape) if any(pads) else None  # borders stay zero
        cols_buf = x.new_empty(step, c * kk, n_l)
        for i in range(j * step, b, lanes * step):
            n = min(step, b - i)
            if padded is not None:
                padded[:n, :, pt:pt + h, pl:pl + w] = x[i:i + n]
                xc = padded[:n]
            else:
                xc = x[i:i + n]
            cols = cols_buf[:n]
            src, dst = _patches(xc, k, dil, st, ho, wo), cols.view(n, c, k[0], k[1], ho, wo)
            if divisors is None:
                dst.copy_(src)
            for t, (s, e) in enumerate(lay.row_bounds):
                if divisors is not None:  # unfold and divide in one pass
                    c0, c1 = s // kk, e // kk
                    torch.div(src[:, c0:c1], divisors[t][i:i + n].view(n, 1, 1, 1, ho, wo), out=dst[:, c0:c1])
                q = _dac_codes(cols[:, s:e], static, dac, levels, prescaled=divisors is not None, inplace=True)
                _mvm_noisy(mat.w_analog[:, s:e], q, alpha, std, None, out=parts[t][i:i + n], noised=True)

    n_chunks = -(-b // step)
    _run_lanes(lane, max(1, min(torch.get_num_threads(), n_chunks)) if x.device.type == "cpu" else 1)

    # 3. output periphery per row tile on the whole batch
    bm = p.bound_management == "iterative" and p.out_bound is not None and bm_may_retry(1.0, p)
    bound = p.out_bound / unit if p.out_bound is not None else None
    adc_levels = (2**p.adc_bits - 2) // 2 if p.adc_bits is not None else None
    for t, (s, e) in enumerate(lay.row_bounds):
        part = parts[t]
        sc = static if static is not None else scale(t)
        retries = []
        for cs, ce in lay.col_bounds if bm else ():  # a vector is read again on a tile where one of its outputs clips
            blk = part[:, cs:ce]
            if _clips(blk, bound):
                clipped = (blk.amax(dim=1) >= bound) | (blk.amin(dim=1) <= -bound)  # (B, L)
                idx = clipped.nonzero(as_tuple=True)
                xs = _rebuild(x, pads, (s // kk, e // kk), k, dil, st, ho, wo, step, idx)
                scs = sc if static is not None else sc.permute(0, 2, 1)[idx]
                retries.append((cs, ce, idx, block_mvm(xs / scs, mat.w_analog[cs:ce, s:e], p, gen,
                                                       start_factor=2.0).div_(unit)))
        if adc_levels is not None:  # the ADC in its own steps (with bound management no kept |y| reaches the bound)
            part.round_()
            if not bm:
                part.clamp_(-adc_levels, adc_levels)
        elif bound is not None and not bm:
            part.clamp_(-bound, bound)
        for cs, ce, idx, values in retries:
            part[:, cs:ce].permute(0, 2, 1)[idx] = values
        if static is None:
            part.mul_(sc * unit if unit != 1.0 else sc)
        elif static * unit != 1.0:
            part.mul_(static * unit)
        part.mul_(mat.out_scale[:, t].view(1, -1, 1))
        if t > 0:
            y.add_(part)
    return y


def _rebuild(x: torch.Tensor, pads: tuple[int, int, int, int], channels: tuple[int, int], k: tuple[int, int],
             dil: tuple[int, int], st: tuple[int, int], ho: int, wo: int, step: int,
             idx: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The unquantised input vectors ``(n, rows of the tile)`` of the (image, patch) pairs ``idx`` on the row tile
    of input ``channels`` (c0, c1): their images' columns unfolded again, ``step`` images at a time."""
    bi, li = idx
    c0, c1 = channels
    out = x.new_empty(len(bi), (c1 - c0) * k[0] * k[1])
    imgs = torch.unique(bi)  # sorted
    for j in range(0, len(imgs), step):
        sel = imgs[j:j + step]
        xs = x[sel, c0:c1]
        if any(pads):
            xs = F.pad(xs, pads)
        cols = _unfold(xs, k, dil, st, ho, wo)
        m = (bi >= sel[0]) & (bi <= sel[-1])
        out[m] = cols[torch.searchsorted(sel, bi[m]), :, li[m]]
    return out
