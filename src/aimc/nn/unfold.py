"""Unfolded columns of a convolution, and its matrix path run chunk by chunk on all the worker lanes.

:func:`batched_forward` is the matrix path of an ungrouped convolution (any number of row and column tiles)
without an autograd graph. Same semantics as
:func:`aimc.nn.mvm.tiles_forward` (and the reference :func:`aimc.periphery.tiled_mvm`), in another order:

1. the output noise of every row tile is drawn for the whole batch (:func:`aimc.nn.parallel_normal.normal_`), or
   was drawn ahead while the layers before ran (:mod:`aimc.nn.noise_ahead`);
2. the batch runs a few images at a time (their columns and outputs stay in the CPU cache): per row tile, unfold
   and divide by the DAC divisor (the per-patch input range, computed once per lane) in one pass, round,
   add the product of all column tiles (they share the row tile's inputs) onto the chunk's slice of the noise;
   then the chunk's output periphery: which vectors clip (bound management), ADC rounding, × input range × ADC
   step × digital scale, sum over row tiles. With several lanes (:func:`aimc.nn.parallel_normal.lane_count`) each
   lane takes a contiguous run of chunks on its own thread, one core each: their work is independent (no random
   numbers, no host reads), so no thread waits at a barrier and the numbers do not depend on the lane count;
3. bound management (one host read per tile: does any vector clip?): the clipped vectors of the whole batch are
   read again, one :func:`aimc.periphery.block_mvm` call per tile (so the random numbers do not depend on the chunk
   size either), and written over the chunks' values in the same output units; then the sum over row tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from aimc.nn.mvm import _dac_codes, _mvm_noisy, _periphery_, adc_unit, out_noise_std
from aimc.nn import noise_ahead
from aimc.nn.parallel_normal import lane_count, normal_, worker_pool
from aimc.periphery import block_mvm, bm_may_retry, dac_step

__all__ = ["batched_forward", "patch_absmax", "window_max"]

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


ROW_PADDED = True
"""Build stride-1, width-preserving convolutions' patches from rows padded only above and below
(:class:`_RowPadded`); ``False`` pads every row, as for other geometries (tests compare the two)."""


class _RowPadded:
    """A chunk's zero-padded input whose rows keep their width (padding rows above and below only), for a
    convolution with stride 1 whose output is as wide as its input.

    Its patches, one strided view over the buffer (:meth:`patches`), read ``ho·wo`` consecutive elements for each
    channel and kernel tap, where the usual fully padded rows give runs of only ``wo`` (torch's elementwise loops pay
    per run: the division that builds the DAC inputs took 0.76 ns an element for 8×8 outputs, 0.11 contiguous). A tap that reaches left or right of a row reads the neighbouring row's end instead of the zero padding.
    Divided patches take those columns' divisor as +inf (:meth:`edge_divisor`): a finite value over +inf is ±0,
    which adds nothing to a product's sum, exactly as the padding's +0.0 (0 / d) does (a sum that starts from
    +0.0 or from the output noise is unchanged by adding −0.0; ``tests/test_unfold_rows.py`` compares outputs bit
    for bit). Copied patches (static ranges) have those columns zeroed (:meth:`clear_edges`).
    """

    def __init__(self, x: torch.Tensor, step: int, pads: tuple[int, int, int, int], k: tuple[int, int],
                 dil: tuple[int, int], ho: int) -> None:
        _, c, h, w = x.shape
        pl, pr, pt, pb = pads
        self.c, self.hp, self.w, self.pt, self.h, self.k, self.dil, self.ho, self.pl = (
            c, h + pt + pb, w, pt, h, k, dil, ho, pl)
        # pl elements before the first row and pr after the last: the edge taps of the first and last rows
        self.flat = x.new_zeros(pl + step * c * self.hp * w + pr)
        self.body = self.flat[pl:pl + step * c * self.hp * w].view(step, c, self.hp, w)

    @staticmethod
    def fits(pads: tuple[int, int, int, int], st: tuple[int, int], w: int, wo: int) -> bool:
        return ROW_PADDED and any(pads) and st == (1, 1) and wo == w

    def load(self, x: torch.Tensor) -> None:
        """Copy a chunk of the input ``(n, C, h, w)`` between the padding rows (the padding stays zero)."""
        self.body[:x.shape[0], :, self.pt:self.pt + self.h] = x

    def patches(self, n: int) -> torch.Tensor:
        """``(n, C, kh, kw, ho, wo)`` view: element (…, i, j, y, x) is padded row y + i·dil_h, column
        x + j·dil_w − pl (read past a row's end where that column is padding)."""
        c, hp, w = self.c, self.hp, self.w
        return self.flat.as_strided((n, c, self.k[0], self.k[1], self.ho, w),
                                    (c * hp * w, hp * w, self.dil[0] * w, self.dil[1], w, 1), 0)

    def _edges(self) -> list[tuple[int, slice]]:
        """(kernel column, output columns) whose tap falls on the left or right padding."""
        w, out = self.w, []
        for j in range(self.k[1]):
            off = j * self.dil[1] - self.pl  # input column of output column 0 for this tap
            if off:
                out.append((j, slice(0, min(-off, w)) if off < 0 else slice(max(w - off, 0), w)))
        return out

    def edge_divisor(self, d: torch.Tensor) -> torch.Tensor:
        """The per-patch divisor ``(n, C', 1, 1, ho, wo)`` (C' = 1, or the channels of a grouped layer) as
        ``(n, C', 1, kw, ho, wo)``, +inf where the tap falls on padding."""
        out = d.expand(-1, -1, -1, self.k[1], -1, -1).clone()
        for j, cols in self._edges():
            out[:, :, :, j, :, cols] = float("inf")
        return out

    def clear_edges(self, cols: torch.Tensor) -> None:
        """Zero the entries of copied patches ``(n, C, kh, kw, ho, wo)`` that fall on the left or right padding."""
        for j, sl in self._edges():
            cols[:, :, :, j, :, sl].zero_()


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
    if threads != 1:
        torch.set_num_threads(1)
    try:
        lane(0, lanes)
    finally:
        if threads != 1:
            torch.set_num_threads(threads)
        for f in futures:
            f.result()


def batched_forward(layer, x: torch.Tensor, pads: tuple[int, int, int, int], k: tuple[int, int],  # noqa: ANN001
                    dil: tuple[int, int], st: tuple[int, int], ho: int, wo: int, step: int,
                    dynamic: bool) -> torch.Tensor:
    """The matrix path of an ungrouped convolution (see the module docstring).

    Args:
        layer: the analog convolution (``groups == 1``).
        x: ``(B, C, H, W)`` input: unpadded when ``pads`` (zero padding) are given, else already padded.
        pads: zero padding (left, right, top, bottom).
        k, dil, st: kernel size, dilation and stride (2-d; a Conv1d has height 1).
        ho, wo: output size.
        step: images per chunk.
        dynamic: per-patch (dynamic) input ranges, the abs-max of each row tile's inputs; else the static range.

    Returns:
        ``(B, out_channels, ho·wo)`` without the bias.
    """
    mat = layer.analog
    lay, p, gen = mat.layout, mat.config.periphery, mat._forward_gen
    b, c, h, w = x.shape
    pl, pr, pt, pb = pads
    padded_shape = (c, h + pt + pb, w + pl + pr)
    kk, n_l, n_rt = k[0] * k[1], ho * wo, len(lay.row_bounds)
    static = None if dynamic else mat.static_range(layer.aimc_name)
    dac = dac_step(p.dac_bits) if p.dac_bits is not None else None
    levels = (2**p.dac_bits - 2) // 2 if p.dac_bits is not None and static is not None else None
    unit, std = adc_unit(p), out_noise_std(p)
    alpha = (dac if dac is not None else 1.0) / unit
    bm = p.bound_management == "iterative" and p.out_bound is not None and bm_may_retry(1.0, p)
    bound = p.out_bound / unit if p.out_bound is not None else None
    adc_levels = (2**p.adc_bits - 2) // 2 if p.adc_bits is not None else None
    # 1. each row tile's output (in ADC steps) starts as its noise (drawn ahead while the layers before ran, when
    # the model's forward planned it: aimc.nn.noise_ahead)
    shapes = [(b, lay.out_features, n_l)] + ([(n_rt - 1, b, lay.out_features, n_l)] if n_rt > 1 else [])
    ahead = noise_ahead.take(layer, shapes, std, gen, x.dtype) if std > 0 else None
    if ahead is not None:
        y, extra = ahead[0], ahead[1] if n_rt > 1 else None
    else:
        y = x.new_empty(shapes[0])
        extra = x.new_empty(shapes[1]) if n_rt > 1 else None
        if std > 0:
            normal_(y, std, gen)
            if extra is not None:
                normal_(extra, std, gen)
    parts = [y] + (list(extra) if extra is not None else [])
    scales = x.new_empty(n_rt, b, 1, n_l) if dynamic else None  # per-patch input ranges, filled chunk by chunk
    # (row tile, column tile) -> (B, L): vectors with an output at the bound, filled by the chunks
    clipped = torch.empty(n_rt, len(lay.col_bounds), b, n_l, dtype=torch.bool, device=x.device) if bm else None
    sum_in_lanes = n_rt > 1 and not bm  # with re-reads the row tiles are summed after them (step 3)

    # 2. per chunk: DAC, products, output periphery. Each lane takes a contiguous run of chunks and first computes
    # its images' input ranges per row tile (a few ops for the run instead of a few per chunk)
    n_chunks = -(-b // step)
    n_lanes = max(1, min(lane_count(), n_chunks)) if x.device.type == "cpu" else 1
    channels = [(s // kk, e // kk) for s, e in lay.row_bounds]
    w_tiles = [mat.w_analog[:, s:e] for s, e in lay.row_bounds]
    out_scales = [mat.out_scale[:, t].view(1, -1, 1) for t in range(n_rt)]
    static_factor = static * unit if static is not None and static * unit != 1.0 else None

    def lane(j: int, lanes: int) -> None:
        lo, hi = n_chunks * j // lanes * step, min(b, n_chunks * (j + 1) // lanes * step)
        rows = _RowPadded(x, step, pads, k, dil, ho) if _RowPadded.fits(pads, st, w, wo) else None
        divisors, factors = [], []
        for t, (c0, c1) in enumerate(channels if dynamic else ()):
            sc = scales[t, lo:hi]
            torch.clamp_min(patch_absmax(x[lo:hi, c0:c1], pads, k, dil, st, ho, wo), 1e-30, out=sc)
            d = (sc * dac if dac is not None else sc).view(hi - lo, 1, 1, 1, ho, wo)
            divisors.append(rows.edge_divisor(d) if rows is not None else d)
            factors.append(sc * unit if unit != 1.0 else sc)
        padded = x.new_zeros(step, *padded_shape) if any(pads) and rows is None else None  # borders stay zero
        cols_buf = x.new_empty(step, c * kk, n_l)
        for i in range(lo, hi, step):
            n, r = min(step, hi - i), i - lo
            if rows is not None:
                rows.load(x[i:i + n])
            elif padded is not None:
                padded[:n, :, pt:pt + h, pl:pl + w] = x[i:i + n]
                xc = padded[:n]
            else:
                xc = x[i:i + n]
            cols = cols_buf[:n]
            src = rows.patches(n) if rows is not None else _patches(xc, k, dil, st, ho, wo)
            dst = cols.view(n, c, k[0], k[1], ho, wo)
            if not dynamic:
                dst.copy_(src)
                if rows is not None:
                    rows.clear_edges(dst)
            for t, (s, e) in enumerate(lay.row_bounds):
                if dynamic:  # unfold and divide in one pass
                    c0, c1 = channels[t]
                    torch.div(src[:, c0:c1], divisors[t][r:r + n], out=dst[:, c0:c1])
                q = _dac_codes(cols[:, s:e], static, dac, levels, prescaled=dynamic, inplace=True)
                part = parts[t][i:i + n]
                _mvm_noisy(w_tiles[t], q, alpha, std, None, out=part, noised=True)
                for ci, (cs, ce) in enumerate(lay.col_bounds if bm else ()):
                    # (n, L) vectors with a clipped output on this tile; no host read here (one per tile, step 3)
                    blk = part[:, cs:ce]
                    torch.logical_or(blk.amax(dim=1) >= bound, blk.amin(dim=1) <= -bound, out=clipped[t, ci, i:i + n])
                _periphery_(part, factors[t][r:r + n] if dynamic else static_factor, bm, adc_levels, bound,
                            out_scales[t])
                if sum_in_lanes and t > 0:
                    y[i:i + n].add_(part)

    _run_lanes(lane, n_lanes)
    noise_ahead.done(layer, shapes, std, x.dtype)  # the next layer's noise may start on a worker thread
    if not bm:
        return y

    # 3. re-reads of the clipped vectors, tile by tile, in the chunks' output units; then the sum over row tiles
    for t, (s, e) in enumerate(lay.row_bounds):
        for ci, (cs, ce) in enumerate(lay.col_bounds):
            if not bool(clipped[t, ci].any()):
                continue
            idx = clipped[t, ci].nonzero(as_tuple=True)
            xs = _rebuild(x, pads, (s // kk, e // kk), k, dil, st, ho, wo, step, idx)
            scs = static if not dynamic else scales[t].permute(0, 2, 1)[idx]  # (n, 1)
            values = block_mvm(xs / scs, mat.w_analog[cs:ce, s:e], p, gen, start_factor=2.0).div_(unit)
            factor = (scs * unit if unit != 1.0 else scs).unsqueeze(2) if dynamic else static_factor
            _periphery_(values.unsqueeze(2), factor, True, None, bound, mat.out_scale[cs:ce, t].view(1, -1, 1))
            parts[t][:, cs:ce].permute(0, 2, 1)[idx] = values
    for part in parts[1:]:
        y.add_(part)
    return y


def patch_absmax(xs: torch.Tensor, pads: tuple[int, int, int, int], k: tuple[int, int], dil: tuple[int, int],
                 st: tuple[int, int], ho: int, wo: int) -> torch.Tensor:
    """Per-patch abs-max over the channels of ``xs`` ``(n, c, H, W)`` (unpadded when ``pads``, zero padding left,
    right, top, bottom, are given): ``(n, 1, ho·wo)``, a max-pool of max |x| over the channels (not clamped)."""
    # max |x| over the channels as max(max x, −min x): two reductions, no |x| copy of the input
    a = torch.maximum(xs.amax(dim=1, keepdim=True), xs.amin(dim=1, keepdim=True).neg_())
    if any(pads):  # zero padding: |0| never raises a max of values ≥ 0
        a = F.pad(a, pads)
    return window_max(a, k, dil, st, ho, wo).reshape(xs.shape[0], 1, ho * wo)


def window_max(a: torch.Tensor, k: tuple[int, int], dil: tuple[int, int], st: tuple[int, int], ho: int,
               wo: int) -> torch.Tensor:
    """``F.max_pool2d(a, k, stride=st, dilation=dil)`` of ``(B, C, H, W)`` as elementwise maxima of strided views.

    Exactly the same values (a max is exact); kh + kw - 2 elementwise passes over small tensors cost a fraction of
    ATen's CPU max-pool, which also computes the argmax indices.
    """
    def along(t: torch.Tensor, dim: int, n: int, d: int, s: int, size: int) -> torch.Tensor:
        out = t.narrow(dim, 0, (size - 1) * s + 1)
        out = out[:, :, ::s] if dim == 2 else out[:, :, :, ::s]
        for j in range(1, n):
            v = t.narrow(dim, j * d, (size - 1) * s + 1)
            out = torch.maximum(out, v[:, :, ::s] if dim == 2 else v[:, :, :, ::s])
        return out

    return along(along(a, 3, k[1], dil[1], st[1], wo), 2, k[0], dil[0], st[0], ho)


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
