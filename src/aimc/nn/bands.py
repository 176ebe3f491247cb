"""Linear products with a static input range and no output noise: one GEMM per row band, row-major outputs.

:func:`aimc.nn.mvm.tiles_forward` multiplies every crossbar tile on its own (a ``(c, r) @ (r, N)`` product per
tile). With a static input range the DAC codes of a band of input lines are the same for every column tile of that
band, and with no output noise (and no bound management) everything after the product is elementwise per output:
so all the column tiles of a row band are one ``(N, r) @ (r, out)`` GEMM (the LLM preset ``llm_hermes``:
SmolLM2's 78 tile products per block become 24 larger ones, which also use every core), followed by the same
elementwise ADC, input-range and per-column scales, in the same order, and the band outputs summed in the same
order. The result is produced as ``(N, out)`` rows, the layout a Linear returns, so no transposing copy is made.

Same semantics as :func:`aimc.nn.mvm.tiles_forward` (and the reference :func:`aimc.periphery.tiled_mvm`);
``tests/test_bands.py`` checks the two paths against each other.
"""

from __future__ import annotations

import torch

from aimc.nn.mvm import _dac_codes, _periphery_, adc_unit
from aimc.periphery import dac_step

__all__ = ["bands_apply", "bands_forward"]


def bands_apply(mat) -> bool:  # noqa: ANN001
    """Whether :func:`bands_forward` computes ``mat``'s (an ``AnalogMatrix``) product: one group, a static input
    range, no output noise, no bound management (whose retries need each tile's outputs on their own)."""
    p = mat.config.periphery
    return mat.layout.groups == 1 and p.input_range == "static" and p.independent_outputs


@torch.compiler.disable  # eager, like tiles_forward
def bands_forward(mat, x: torch.Tensor, name: str, bias: torch.Tensor | None = None) -> torch.Tensor:  # noqa: ANN001
    """Analog product of ``mat`` (drifted, :func:`bands_apply`) on the input vectors ``x`` ``(N, in)``.

    Returns:
        ``(N, out)``, row-major, plus ``bias`` ``(out,)`` when given.
    """
    lay, p = mat.layout, mat.config.periphery
    static = mat.static_range(name)
    step = dac_step(p.dac_bits) if p.dac_bits is not None else None
    # the DAC codes of all input lines at once (the same numbers tiles_forward computes per row band)
    levels = (2**p.dac_bits - 2) // 2 if step is not None else None
    q = _dac_codes(x, static, step, levels, prescaled=False, inplace=False)
    unit = adc_unit(p)
    alpha = (step if step is not None else 1.0) / unit  # outputs in ADC steps, as in tiles_forward
    adc_levels = (2**p.adc_bits - 2) // 2 if p.adc_bits is not None else None
    bound = p.out_bound / unit if p.out_bound is not None else None  # in ADC steps (unit 1 without an ADC)
    static_factor = static * unit if static * unit != 1.0 else None
    graph = torch.is_grad_enabled() and x.requires_grad  # out= and the reused buffer record no autograd
    y = part = None
    for k, (s, e) in enumerate(lay.row_bounds):
        w_t = mat.w_analog[:, s:e].t()
        yk = torch.mm(q[:, s:e], w_t) if part is None else torch.mm(q[:, s:e], w_t, out=part)
        if alpha != 1.0:
            yk.mul_(alpha)
        _periphery_(yk, static_factor, False, adc_levels, bound, mat.out_scale[:, k])
        if y is None:
            y = yk
        elif graph:
            y = y + yk
        else:
            y.add_(yk)
            part = yk  # the next band's product reuses this buffer
    if bias is not None:
        y = y + bias if graph else y.add_(bias)
    return y
