"""Fast per-tile analog MVMs through the periphery, on the layouts convolutions and linear layers already have.

``tiles_forward`` works on the column layout of ``F.unfold``: ``cols`` ``(B, groups·rows, L)`` (a Linear's input
``(N, in)`` is the view ``(1, in, N)``), so no transpose copies are made; the DAC works in integer units
(``round(x / (scale·step))``, in place when the caller owns ``cols``) and the DAC step is folded into the result.
``static_conv_forward`` keeps a convolution a convolution when the input range is static: one convolution per
row tile on that tile's channels, then output noise, ADC and the digital scales on its output.
``grouped_forward`` computes every tile of a grouped or depthwise layer whose tiles hold whole groups (packed
block-diagonally, ``aimc.mapping``) at once: per-tile input ranges by a segment max over the groups, one batched
product of all groups, elementwise periphery; no Python loop over tiles or groups (only the rare bound-management
re-reads go tile by tile through :func:`aimc.periphery.block_mvm` on the explicit block-diagonal matrix).

Semantics are those of :func:`aimc.periphery.block_mvm` (which the GDC read-out and bound-management retries use):
input scaling → DAC → MVM → + output noise → bound management → ADC → undo scaling → × digital scale.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from aimc.nn.parallel_normal import MIN_SPLIT, normal_
from aimc.periphery import adc_step, block_mvm, bm_may_retry, dac_step

__all__ = ["tiles_forward", "grouped_forward", "tile_max", "tile_to_groups", "static_conv_forward"]


def _noise_(y: torch.Tensor, p, generator: torch.Generator | None) -> torch.Tensor:  # noqa: ANN001
    """In place: + Gaussian output noise of std ``out_noise``."""
    if p.out_noise > 0 and y.numel() >= MIN_SPLIT:  # a large tensor: drawn on several cores
        y.add_(normal_(torch.empty_like(y, memory_format=torch.contiguous_format), p.out_noise, generator))
    elif p.out_noise > 0:
        y.add_(torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype).mul_(p.out_noise))
    return y


def _adc_(y: torch.Tensor, p, clip: bool = True) -> torch.Tensor:  # noqa: ANN001
    """In place: ADC quantisation and clipping at ±out_bound (or only clipping when there is no ADC).

    ``clip=False`` when the caller knows every |y| < out_bound (bound management checked it, or re-ran the vectors
    that reached it): clipping would change nothing then, so that pass is skipped."""
    if p.adc_bits is not None:
        st = adc_step(p.adc_bits, p.out_bound)
        n = (2**p.adc_bits - 2) // 2
        y.div_(st).round_()
        return (y.clamp_(-n, n) if clip else y).mul_(st)
    if p.out_bound is not None and clip:
        return y.clamp_(-p.out_bound, p.out_bound)
    return y


def adc_unit(p) -> float:  # noqa: ANN001
    """The unit :func:`tiles_forward` accumulates a tile's outputs in: the ADC step (the ADC is then a rounding,
    its step folded into the digital scales), 1 without an ADC."""
    return adc_step(p.adc_bits, p.out_bound) if p.adc_bits is not None else 1.0


def out_noise_std(p) -> float:  # noqa: ANN001
    """Std of the output noise in :func:`adc_unit` units (a caller drawing it ahead, ``aimc.nn.unfold``)."""
    return p.out_noise / adc_unit(p)


# under torch.compile this path runs eagerly: its shapes change from layer to layer and chunk to chunk and bound
# management tests values, so tracing it recompiles past dynamo's limit and made compiled forwards slower than eager
@torch.compiler.disable
def _dac_codes(x: torch.Tensor, sc: torch.Tensor | float, step: float | None, clamp_levels: int | None, *,
               prescaled: bool, inplace: bool) -> torch.Tensor:
    """DAC of the fast paths: ``x / sc`` in integer units of ``step`` (rounded; the step is folded into the output),
    clamped to ±``clamp_levels`` for a static range (a dynamic range cannot exceed it), or ``x / sc`` without a DAC.
    ``prescaled``: ``x`` is already divided (only rounded here). ``inplace``: ``x`` may be overwritten."""
    if prescaled:
        return x.round_() if step is not None else x
    if step is None:
        return x.div_(sc) if inplace else x / sc
    q = x.div_(sc * step) if inplace else x / (sc * step)
    q.round_()
    if clamp_levels is not None:
        q.clamp_(-clamp_levels, clamp_levels)
    return q


def _periphery_(part: torch.Tensor, factor: torch.Tensor | float | None, bm: bool, adc_levels: int | None,
                bound: float | None, out_scale: torch.Tensor) -> torch.Tensor:
    """In place, on outputs in ADC steps: the ADC (rounding; clipping unless bound management re-reads every vector
    that reaches the bound), then × ``factor`` (input range × ADC step: per vector, or one number; ``None`` for 1)
    × digital scale. ``adc_levels`` ``None`` and ``bm``: outputs of :func:`aimc.periphery.block_mvm`, which has
    applied the ADC."""
    if adc_levels is not None:
        part.round_()
        if not bm:
            part.clamp_(-adc_levels, adc_levels)
    elif bound is not None and not bm:
        part.clamp_(-bound, bound)
    if factor is not None:
        part.mul_(factor)
    return part.mul_(out_scale)


def tiles_forward(mat, cols: torch.Tensor, name: str, *, owned: bool = False,  # noqa: ANN001
                  scale_fn: Callable[[int, int], torch.Tensor] | None = None,
                  rebuild: Callable[[], torch.Tensor] | None = None,
                  out: torch.Tensor | None = None, prescaled: bool = False) -> torch.Tensor:
    """Analog MVM of every tile of ``mat`` (an ``AnalogMatrix``) on ``cols`` ``(B, groups·rows, L)``.

    Args:
        mat: the layer's ``AnalogMatrix`` (drifted).
        cols: input columns; modified in place if ``owned``.
        name: layer name for error messages.
        owned: the caller owns ``cols`` (e.g. the result of ``F.unfold``) and allows in-place quantisation.
        scale_fn: ``(row_tile, group) -> (B, 1, L)`` per-vector abs-max (positive: zero vectors get a tiny scale),
            when the caller can compute it cheaper than a pass over ``cols`` (convolutions: a max-pool of the
            input); only for dynamic ranges.
        rebuild: with ``owned``, builds the unquantised ``cols`` again (a convolution re-unfolds its input): then
            the columns are quantised in place even under bound management, whose rare retries call it.
        out: contiguous ``(B, out_features, L)`` tensor the result is written into (a convolution's slice of its
            whole batch's output, so the chunks need no concatenation); a new tensor when ``None``.
        prescaled: (dynamic ranges, with ``owned``, ``scale_fn`` and ``rebuild``) the caller has already divided
            each row tile's columns by ``scale_fn(k, g) · DAC step`` (by the scale alone without a DAC), e.g. while
            unfolding them: only the rounding of the DAC is left.

    Returns:
        ``(B, out_features, L)`` (``out`` when given).
    """
    lay, p, gen = mat.layout, mat.config.periphery, mat._forward_gen
    if lay.groups > 1 and lay.whole_groups:  # grouped / depthwise: all tiles of the layer at once
        if scale_fn is not None or prescaled:
            raise TypeError("grouped layouts take per-tile scales: call grouped_forward(tile_scale=...)")
        return grouped_forward(mat, cols, name, owned=owned, rebuild=rebuild, out=out)
    rows, out_pg = lay.rows, lay.out_features // lay.groups
    b, _, n_l = cols.shape
    single = len(lay.row_bounds) == 1 and len(lay.col_bounds) == 1
    y = out if out is not None else None if single else cols.new_empty(b, lay.out_features, n_l)
    static = mat.static_range(name) if p.input_range == "static" else None
    step = dac_step(p.dac_bits) if p.dac_bits is not None else None
    levels = (2**p.dac_bits - 2) // 2 if p.dac_bits is not None else None
    bm = p.bound_management == "iterative" and p.out_bound is not None and bm_may_retry(1.0, p)
    unit = adc_unit(p)
    adc_levels = (2**p.adc_bits - 2) // 2 if p.adc_bits is not None else None
    bound = p.out_bound / unit if p.out_bound is not None else None
    for k, (s, e) in enumerate(lay.row_bounds):
        prepared: dict[int, tuple[torch.Tensor, torch.Tensor | float]] = {}
        for cs, ce in lay.col_bounds:
            g = cs // out_pg
            if g not in prepared:
                xk = cols[:, g * rows + s: g * rows + e, :]
                if static is None:
                    sc = scale_fn(k, g) if scale_fn is not None else xk.abs().amax(dim=1, keepdim=True).clamp_min_(1e-30)
                else:
                    sc = static
                # bound-management retries need the unquantised input: unless the caller can rebuild it, quantise
                # into a new tensor instead of in place (one pass over the columns instead of a copy plus a pass)
                x_raw = xk if bm and rebuild is None else None
                inplace = owned and (not bm or rebuild is not None)
                q = _dac_codes(xk, sc, step, levels if static is not None else None, prescaled=prescaled,
                               inplace=inplace)
                prepared[g] = (q, sc, x_raw)
            q, sc, x_raw = prepared[g]
            w = mat.w_analog[cs:ce, s:e]
            # (B, c, L); a single tile, or the first row tile of a single column tile, multiplies straight into
            # the output
            into_y = single or (k == 0 and len(lay.col_bounds) == 1)
            # in ADC steps (unit): the ADC's division is folded into the product's factor and the noise's std
            yk = _mvm_noisy(w, q, (step if step is not None else 1.0) / unit, out_noise_std(p), gen,
                            out=y if into_y else None)
            retry = None
            if bm and _clips(yk, bound):
                # (B, L): vectors with a clipped output (max and min over the outputs: no |y| copy, no boolean any)
                clipped = (yk.amax(dim=1) >= bound) | (yk.amin(dim=1) <= -bound)
                idx = clipped.nonzero(as_tuple=True)
                if x_raw is None:
                    x_raw = rebuild()[:, g * rows + s: g * rows + e, :]
                    prepared[g] = (q, sc, x_raw)
                xs = x_raw.permute(0, 2, 1)[idx]
                scs = sc if static is not None else sc.permute(0, 2, 1)[idx]
                retry = (idx, block_mvm(xs / scs, w, p, gen, start_factor=2.0).div_(unit))
            # the ADC in its own steps: rounding (and clipping at ±levels; with bound management no |y| that is kept
            # reaches the bound), then one multiplication by step × input range
            if p.adc_bits is not None:
                yk.round_()
                if not bm:
                    yk.clamp_(-adc_levels, adc_levels)
            elif p.out_bound is not None and not bm:
                yk.clamp_(-p.out_bound, p.out_bound)
            if retry is not None:
                yk.permute(0, 2, 1)[retry[0]] = retry[1]
            if static is None:
                yk.mul_(sc * unit if unit != 1.0 else sc)
            elif static * unit != 1.0:
                yk.mul_(static * unit)
            yk.mul_(mat.out_scale[cs:ce, k].view(1, -1, 1))
            if single:
                return yk  # is y when out was given
            if into_y:
                continue
            if k == 0:
                y[:, cs:ce] = yk
            else:
                y[:, cs:ce] += yk
    return y


def _mvm_noisy(w: torch.Tensor, q: torch.Tensor, alpha: float, std: float, generator: torch.Generator | None,
               out: torch.Tensor | None = None, noised: bool = False) -> torch.Tensor:
    """``alpha · (w @ q)`` plus Gaussian output noise of std ``std``: ``(c, r) @ (B, r, L) -> (B, c, L)``.

    The noise is drawn straight into the result and the product added onto it by one fused ``baddbmm_``: no
    separate noise tensor, scaling pass or addition pass over the outputs. Written into ``out`` when given;
    ``noised``: ``out`` already holds the noise (drawn by the caller), only the product is added.
    """
    b, _, n_l = q.shape
    if std > 0:
        y = out if out is not None else q.new_empty(b, w.shape[0], n_l)
        if not noised:
            normal_(y, std, generator)
        return y.baddbmm_(w.expand(b, *w.shape), q, alpha=alpha)
    y = torch.matmul(w, q, out=out) if out is not None else torch.matmul(w, q)
    return y.mul_(alpha) if alpha != 1.0 else y


def _clips(y: torch.Tensor, bound: float) -> bool:
    """Whether any |y| reaches ``bound`` (one pass over ``y``; the per-vector test runs only when it does).

    One host read per tile: iterative bound management decides from the values whether to read again, so it
    cannot run without one (aihwkit reads its bound test back to the host as well)."""
    lo, hi = torch.aminmax(y)
    return bool((hi >= bound) | (lo <= -bound))


def static_conv_forward(layer, x: torch.Tensor) -> torch.Tensor | None:  # noqa: ANN001
    """Static input range: one convolution per row tile (the DAC is elementwise), then the output periphery.

    Returns ``None`` when bound management finds a clipped output (the caller then takes the unfolded path, which
    retries clipped vectors exactly).
    """
    mat = layer.analog
    lay, p, gen = mat.layout, mat.config.periphery, mat._forward_gen
    r = mat.static_range(layer.aimc_name)
    kk = 1
    for k in layer.kernel_size:
        kk *= k
    if p.dac_bits is not None:
        st = dac_step(p.dac_bits)
        n = (2**p.dac_bits - 2) // 2
        xq = (x / (r * st)).round_().clamp_(-n, n)
        unit = st
    else:
        xq, unit = x / r, 1.0
    c_pg, groups = layer.in_channels // layer.groups, layer.groups
    bm = p.bound_management == "iterative" and p.out_bound is not None and bm_may_retry(1.0, p)
    out = None
    for k, (s, e) in enumerate(lay.row_bounds):
        c0, c1 = s // kk, e // kk
        if c0 == 0 and c1 == c_pg:
            xk = xq
        elif groups == 1:
            xk = xq[:, c0:c1]
        else:  # channels c0..c1 of every group: a view, then one copy (no index tensor)
            xk = xq.unflatten(1, (groups, c_pg))[:, :, c0:c1].flatten(1, 2)
        w = mat.w_analog[:, s:e].reshape(lay.out_features, c1 - c0, *layer.kernel_size)
        yk = layer._conv_forward(xk, w, None)
        if unit != 1.0:
            yk.mul_(unit)
        _noise_(yk, p, gen)
        if bm and _clips(yk, p.out_bound):
            return None
        _adc_(yk, p, clip=not bm)
        shape = (1, -1) + (1,) * (yk.dim() - 2)
        yk.mul_(r).mul_(mat.out_scale[:, k].view(shape))
        out = yk if out is None else out.add_(yk)
    if layer.bias is not None:
        out = out + layer.bias.view((1, -1) + (1,) * (out.dim() - 2))
    return out


def tile_max(per_group: torch.Tensor, per_tile: int, dim: int = 1) -> torch.Tensor:
    """Max of ``per_group`` (groups along ``dim``) over each packed tile's ``per_tile`` consecutive
    groups (the last tile takes the remainder): the groups axis becomes the tiles axis."""
    n = per_group.shape[dim]
    if per_tile == 1:
        return per_group
    full = n // per_tile * per_tile
    parts = []
    if full:
        parts.append(per_group.narrow(dim, 0, full).unflatten(dim, (full // per_tile, per_tile)).amax(dim=dim + 1))
    if full < n:  # the last tile's remainder of groups
        parts.append(per_group.narrow(dim, full, n - full).amax(dim=dim, keepdim=True))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def tile_to_groups(per_tile_t: torch.Tensor, per_tile: int, groups: int, dim: int = 1) -> torch.Tensor:
    """A per-tile tensor (tiles along ``dim``) repeated for each of the tile's groups: ``groups`` along ``dim``."""
    if per_tile == 1:
        return per_tile_t
    return per_tile_t.repeat_interleave(per_tile, dim=dim).narrow(dim, 0, groups)


@torch.compiler.disable
def grouped_forward(mat, cols: torch.Tensor, name: str, *, owned: bool = False,  # noqa: ANN001
                    rebuild: Callable[[], torch.Tensor] | None = None, out: torch.Tensor | None = None,
                    prescaled: bool = False, tile_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Analog MVM of all tiles of a grouped matrix whose tiles hold whole groups, batched over tiles and groups.

    Same semantics as :func:`tiles_forward` (and :func:`aimc.periphery.tiled_mvm` on the explicit block-diagonal
    tiles): the dynamic input range of a vector on a tile is the abs-max over all the tile's groups' inputs.

    Args:
        mat: the layer's ``AnalogMatrix`` (``layout.whole_groups``).
        cols: ``(B, groups·rows, L)`` input columns; modified in place if ``owned``.
        name: layer name for error messages.
        owned, rebuild, out: as in :func:`tiles_forward`.
        prescaled: the caller already divided the columns by ``tile_scale · DAC step`` (only rounding is left).
        tile_scale: ``(B, n_tiles, L)`` per-vector abs-max of each tile's inputs (dynamic ranges; computed from
            ``cols`` when ``None``).

    Returns:
        ``(B, out_features, L)`` (``out`` when given).
    """
    lay, p, gen = mat.layout, mat.config.periphery, mat._forward_gen
    g_n, rows, per = lay.groups, lay.rows, lay.groups_per_tile
    out_pg = lay.out_features // g_n
    b, _, n_l = cols.shape
    x4 = cols.view(b, g_n, rows, n_l)
    static = mat.static_range(name) if p.input_range == "static" else None
    step = dac_step(p.dac_bits) if p.dac_bits is not None else None
    bm = p.bound_management == "iterative" and p.out_bound is not None and bm_may_retry(1.0, p)
    if static is None:
        if tile_scale is None:
            gmax = torch.maximum(x4.amax(dim=2), x4.amin(dim=2).neg_())  # (B, G, L): no |x| copy
            tile_scale = tile_max(gmax, per).clamp_min_(1e-30)
        sc = tile_to_groups(tile_scale, per, g_n).unsqueeze(2)  # (B, G, 1, L)
    else:
        sc = static
    x_raw = x4 if bm and rebuild is None else None
    inplace = owned and (not bm or rebuild is not None)
    q = _dac_codes(x4, sc, step, (2**p.dac_bits - 2) // 2 if static is not None and step is not None else None,
                   prescaled=prescaled, inplace=inplace)
    w = mat.w_analog.view(g_n, out_pg, rows)
    # outputs in ADC steps, as in tiles_forward: the ADC's division folded into the product's factor and the noise
    unit, std = adc_unit(p), out_noise_std(p)
    alpha = (step if step is not None else 1.0) / unit
    bound = p.out_bound / unit if p.out_bound is not None else None
    # one batched product of all groups (groups as the batch of a bmm: ~10x faster than a broadcast matmul or an
    # elementwise product and sum for depthwise 1 x k² rows on CPU); written into ``out`` unless autograd records
    graph = torch.is_grad_enabled() and q.requires_grad
    if b == 1 and not graph:
        y = out if out is not None else cols.new_empty(b, lay.out_features, n_l)
        y3 = y.view(b, g_n, out_pg, n_l)[0]
        if std > 0:  # the noise drawn into the output, the product added onto it (no noise tensor, no extra pass)
            normal_(y, std, gen)
            y3.baddbmm_(w, q[0], alpha=alpha)
        else:
            torch.bmm(w, q[0], out=y3)
            if alpha != 1.0:
                y.mul_(alpha)
    else:
        y = torch.einsum("gcr,bgrl->bgcl", w, q).reshape(b, lay.out_features, n_l)
        if out is not None and not graph:
            y = out.copy_(y)
        if alpha != 1.0:
            y.mul_(alpha)
        if std > 0:
            y.add_(normal_(torch.empty_like(y, memory_format=torch.contiguous_format), std, gen))
    y4 = y.view(b, g_n, out_pg, n_l)
    retry = None
    if bm and _clips(y, bound):
        # (B, n_tiles, L): vectors with a clipped output on a tile, re-read tile by tile (rare)
        hi = tile_max(y4.amax(dim=2), per)
        lo = tile_max(y4.amin(dim=2).neg_(), per)
        clipped = (hi >= bound) | (lo >= bound)
        if x_raw is None:
            x_raw = rebuild().view(b, g_n, rows, n_l)
        retry = []
        for j in clipped.any(dim=2).any(dim=0).nonzero().flatten().tolist():
            idx = clipped[:, j].nonzero(as_tuple=True)  # (batch, position) pairs
            g0, g1 = lay.tile_groups(j)
            xs = x_raw[:, g0:g1].flatten(1, 2).permute(0, 2, 1)[idx]  # (n, tile input lines)
            scs = static if static is not None else tile_scale[:, j][idx].unsqueeze(1)
            cs, ce = lay.col_bounds[j]
            retry.append((idx, cs, ce, block_mvm(xs / scs, lay.tile_weights(mat.w_analog, j, 0), p, gen,
                                                 start_factor=2.0).div_(unit)))
    if p.adc_bits is not None:  # the ADC in its own steps (with bound management no kept |y| reaches the bound)
        y.round_()
        if not bm:
            n_adc = (2**p.adc_bits - 2) // 2
            y.clamp_(-n_adc, n_adc)
    elif bound is not None and not bm:
        y.clamp_(-bound, bound)
    for idx, cs, ce, part in retry or ():
        y[:, cs:ce].permute(0, 2, 1)[idx] = part
    if static is None:
        y4.mul_(sc * unit if unit != 1.0 else sc)
    elif static * unit != 1.0:
        y.mul_(static * unit)
    y.mul_(mat.out_scale[:, 0].view(1, -1, 1))
    if out is not None and y is not out:
        out.copy_(y)
        return out
    return y
