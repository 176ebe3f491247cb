"""``audit``: check by execution that what the conversion report calls analog is computed analog.

Three measurements on example inputs, none of which reads the report:

1. **Which weights are matrix-product weights**: the plain model (``aimc.to_digital``) runs once under a
   ``TorchDispatchMode`` that records the storage of every operand of every ATen matrix product (``mm``,
   ``addmm``, ``bmm``, convolutions, torch's fused Transformer kernels...). Parameters read by ``embedding`` are
   lookup tables and counted apart.
2. **Which analog weights really run analog**: on a programmed copy, each analog matrix in turn gets its drifted
   analog weights multiplied by random factors (std 30: sign and size scrambled, so that even the query weights of
   a freshly initialised attention, whose scores are all near 0, change the output), and if that does not move
   the output (a saturated hardsigmoid), set to zero; if the output still does not move, that matrix is not on the computation path (e.g. a parent multiplied a copy of the master weight).
   Output noise is replayed identically for every forward (the layers' generators are restored), so any change
   comes from the corrupted matrix.
3. **Leaks**: in the analog forward no master weight of an analog layer may be an operand of a matrix product.

``measured_share`` = analog weights that passed 2 and 3 / all matrix-product weights of 1; it must equal the
report's ``analog_share``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from aimc.errors import StateError

__all__ = ["audit", "AuditResult"]

_PRODUCT_OPS = frozenset({
    "mm", "addmm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "dot", "vdot", "matmul", "linear", "_addmm_activation",
    "convolution", "_convolution", "convolution_overrideable", "mkldnn_convolution", "_slow_conv2d_forward",
    "slow_conv3d_forward", "slow_conv_transpose2d", "slow_conv_transpose3d", "_conv_depthwise2d",
    "conv_depthwise3d", "cudnn_convolution", "cudnn_convolution_transpose", "mkldnn_linear",
    "_transformer_encoder_layer_fwd", "_native_multi_head_attention", "lstm", "gru", "rnn_tanh", "rnn_relu",
    "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell",
    "mkldnn_rnn_layer", "_cudnn_rnn", "miopen_rnn"})
_LOOKUP_OPS = frozenset({"embedding", "embedding_bag", "_embedding_bag", "_embedding_bag_forward_only"})


class _Recorder(TorchDispatchMode):
    """Records the storages of the operands of matrix products and lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.products: set[int] = set()
        self.lookups: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        name = func.overloadpacket.__name__
        target = self.products if name in _PRODUCT_OPS else self.lookups if name in _LOOKUP_OPS else None
        if target is not None:
            for t in tree_leaves((args, kwargs or {})):
                if isinstance(t, torch.Tensor) and t.numel():
                    target.add(t.untyped_storage().data_ptr())
        return func(*args, **(kwargs or {}))


def _storage(p: torch.Tensor) -> int:
    return p.untyped_storage().data_ptr()


def _outputs(out: object) -> list[torch.Tensor]:
    if hasattr(out, "to_tuple"):  # Hugging Face ModelOutput
        out = out.to_tuple()
    return [t.detach().float() for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


@dataclass
class AuditResult:
    """What ``audit`` measured.

    Attributes:
        product_weights: ``{parameter name: weights}`` used by a matrix product (lookup tables aside).
        lookup_weights: ``{parameter name: weights}`` read by an embedding lookup (also those tied to a product).
        analog: ``{analog matrix name: output moved when its analog weights were corrupted}``.
        leaks: master weights of analog layers that a matrix product used in the analog forward.
        measured_share: analog weights that passed both checks / all ``product_weights``.
        reported_share: the conversion report's ``analog_share``.
    """

    product_weights: dict[str, int] = field(default_factory=dict)
    lookup_weights: dict[str, int] = field(default_factory=dict)
    analog: dict[str, bool] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    measured_share: float = 0.0
    reported_share: float = float("nan")

    def __str__(self) -> str:
        bad = [n for n, ok in self.analog.items() if not ok]
        return (f"analog share by execution {100 * self.measured_share:.2f} % (report: "
                f"{100 * self.reported_share:.2f} %); {sum(self.analog.values())}/{len(self.analog)} analog "
                f"matrices verified" + (f"; not on the computation path: {bad}" if bad else "")
                + (f"; master weights used digitally: {self.leaks}" if self.leaks else ""))


@torch.no_grad()
def audit(model: nn.Module, *inputs: object, seed: int = 0, t_seconds: float = 86_400.0,
          rtol: float = 1e-6) -> AuditResult:
    """Measure by execution which weights of a converted ``model`` are computed analog (module docstring).

    Args:
        model: a model returned by ``aimc.convert`` (programmed or not; it is not modified).
        inputs: example positional inputs of ``model`` (a batch).
        seed: programming / read-noise seed of the copy that is programmed here.
        t_seconds: time after programming of that copy, s.
        rtol: an output has moved when ``max|Δ| > rtol · max|y|`` (forwards are replayed exactly, so an
            unchanged path gives Δ = 0; freshly initialised models can have tiny outputs).

    Returns:
        An :class:`AuditResult`; ``measured_share == reported_share`` when the report is right.
    """
    from aimc.inference import at_time, program
    from aimc.nn.convert import analog_layers, to_digital

    report = getattr(model, "aimc_report", None)
    if report is None or not any(True for _ in analog_layers(model)):
        raise StateError("aimc.audit needs a converted model: aimc.convert(model, config).")
    res = AuditResult(reported_share=report.analog_share)
    digital = to_digital(model).eval()
    rec = _Recorder()
    with rec:
        digital(*inputs)
    seen: set[int] = set()
    for name, p in digital.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if _storage(p) in rec.lookups:
            res.lookup_weights[name] = p.numel()
        elif _storage(p) in rec.products and p.dim() >= 2:
            res.product_weights[name] = p.numel()
    del digital

    m = copy.deepcopy(model).eval()
    program(m, seed=seed)
    at_time(m, t_seconds, seed=seed)
    mats = [(f"{name}{sfx}" if sfx else name, mat, layer, sfx)
            for name, layer in analog_layers(m) for sfx, (mat, _) in layer.analog_matrices().items()]
    gens = [(mat, mat._forward_gen.get_state()) for _, mat, _, _ in mats if mat._forward_gen is not None]

    def run() -> list[torch.Tensor]:
        for mat, state in gens:
            mat._forward_gen.set_state(state)
        return _outputs(m(*inputs))

    rec = _Recorder()
    with rec:
        y0 = run()
    masters = {}
    for full, _, layer, sfx in mats:
        w = layer.weight if not sfx else getattr(layer, sfx.lstrip("."))
        masters[full] = w
        if _storage(w) in rec.products:
            res.leaks.append(full)
    analog_w = 0
    gen = torch.Generator().manual_seed(seed)
    for full, mat, _, _ in mats:
        bufs = [b for b in (mat.w_eff, mat.w_analog) if b.numel()]
        saved = [b.clone() for b in bufs]
        moved = False
        # each weight times a random factor of std 30 (sign and size: no product of small weights hides it); if a
        # saturating function (hardsigmoid, a clamp) swallows that, the matrix set to zero
        for corrupt in ("scramble", "zero"):
            try:
                for b in bufs:
                    b.mul_(torch.randn(b.shape, generator=gen).mul_(30.0).to(b)) if corrupt == "scramble" else b.zero_()
                y1 = run()
            finally:
                for b, s in zip(bufs, saved):
                    b.copy_(s)
            moved = any((a - b).abs().max() > rtol * a.abs().max() for a, b in zip(y0, y1) if a.numel())
            if moved:
                break
        res.analog[full] = bool(moved)
        if moved and full not in res.leaks:
            analog_w += masters[full].numel()
    res.measured_share = analog_w / max(sum(res.product_weights.values()), 1)
    return res
