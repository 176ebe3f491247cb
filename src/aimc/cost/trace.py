"""Count the work of one inference: output positions of every analog layer, MACs of weight layers that stay
digital, and the digital elementwise work (batch norm, activations, residual adds, pooling) seen as torch function
calls outside the weight layers, attributed to the analog layer that ran last before it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from aimc.errors import ShapeError, UnsupportedLayerError

__all__ = ["OPS", "trace", "weight_kind"]

OPS = ("bn", "activation", "residual", "pool")
_NORM = {"batch_norm", "layer_norm", "group_norm", "instance_norm"}
_ACT = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "tanh", "gelu", "silu", "leaky_relu", "elu",
        "softmax", "log_softmax", "hardswish", "hardsigmoid", "mish", "threshold", "threshold_"}
_ADD = {"add", "add_", "__add__", "__iadd__", "__radd__", "sub", "sub_", "__sub__", "__isub__"}
_POOL = {"max_pool1d", "max_pool2d", "_max_pool1d", "_max_pool2d", "max_pool1d_with_indices",
         "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
         "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "mean", "amax"}


class _OpCounter(TorchFunctionMode):
    """Counts digital elementwise work outside the weight layers, attributed to the analog layer that ran last."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.current = ""
        self.counts: dict[str, Counter] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if self.depth == 0 and isinstance(out, torch.Tensor):
            name = getattr(func, "__name__", "")
            kind, n = None, 0
            if name in _NORM:
                kind, n = "bn", out.numel()
            elif name in _ACT:
                kind, n = "activation", out.numel()
            elif name in _ADD and len(args) > 1 and all(isinstance(a, torch.Tensor) and a.numel() > 1
                                                         for a in args[:2]):
                kind, n = "residual", out.numel()
            elif name in _POOL and args and isinstance(args[0], torch.Tensor) and out.numel() < args[0].numel():
                kind, n = "pool", args[0].numel()
            if kind:
                self.counts.setdefault(self.current, Counter())[kind] += n
        return out


def _steps(mod: nn.LSTM, x: torch.Tensor) -> int:
    """Time steps of an LSTM input (unbatched ``(T, F)``, ``(T, N, F)`` or batch-first ``(N, T, F)``)."""
    return int(x.shape[0] if x.dim() == 2 else x.shape[1 if mod.batch_first else 0])


def weight_kind(m: nn.Module) -> str | None:
    for t in (nn.LSTM, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear):
        if isinstance(m, t):
            return t.__name__
    return None


def trace(model: nn.Module, analog: dict[str, nn.Module], digital_w: dict[str, nn.Module], x: torch.Tensor,
          run: Callable[[torch.Tensor], None]) -> tuple[dict[str, int], dict[str, int], dict[str, Counter]]:
    """Run ``x``; returns (positions per analog layer, MACs per digital weight layer, op counts per layer)."""
    batch = x.shape[0] if x.dim() else 1
    positions: dict[str, int] = Counter()
    macs: dict[str, int] = Counter()
    counter = _OpCounter()
    hooks = []

    def pre(name: str):  # noqa: ANN202
        def f(mod, inp):  # noqa: ANN001
            counter.depth += 1
            if isinstance(mod, nn.RNNBase) and name in analog:
                positions[name] += _steps(mod, inp[0])
        return f

    def post(name: str, is_analog: bool):  # noqa: ANN202
        def f(mod, inp, out):  # noqa: ANN001
            counter.depth -= 1
            y = out[0] if isinstance(out, tuple) else out
            if isinstance(mod, nn.RNNBase):  # gates and cell state are digital; counted per sequence × batch (as LSTM)
                steps = _steps(mod, inp[0])
                h, d, n_b = mod.hidden_size, 2 if mod.bidirectional else 1, batch if inp[0].dim() == 3 else 1
                ctr = counter.counts.setdefault(name if is_analog else counter.current, Counter())
                ctr["activation"] += n_b * steps * 5 * h * d * mod.num_layers  # 3 sigmoid + 2 tanh per unit
                ctr["residual"] += n_b * steps * 3 * h * d * mod.num_layers  # f·c + i·g, o·tanh(c)
                if not is_analog:
                    macs[name] += steps * sum(p.numel() for k, p in mod.named_parameters() if k.startswith("weight_"))
            elif is_analog and isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) and \
                    not isinstance(mod, nn.modules.conv._ConvTransposeNd):
                cols = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
                positions[name] += y.numel() // cols // (batch if y.dim() > 1 else 1)
            elif is_analog:  # attention projections, (in, out) projections, transposed convolutions: input vectors
                x_in = inp[0]
                feat = x_in.shape[1] if isinstance(mod, nn.modules.conv._ConvTransposeNd) else x_in.shape[-1]
                positions[name] += x_in.numel() // feat // (batch if x_in.dim() > 1 else 1)
            else:
                w = mod.weight
                per_out = w.numel() // w.shape[0]
                macs[name] += y.numel() * per_out // (batch if y.dim() > 1 else 1)
            if is_analog:
                counter.current = name
        return f

    for name, m in list(analog.items()) + list(digital_w.items()):
        hooks.append(m.register_forward_pre_hook(pre(name)))
        hooks.append(m.register_forward_hook(post(name, name in analog)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            run(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        if isinstance(e, UnsupportedLayerError):
            raise
        raise ShapeError(f"the model cannot run an input of shape {tuple(x.shape)} (batch first) for the cost "
                         f"count: {type(e).__name__}: {e}. Pass input_shape without the batch dimension, e.g. "
                         "(3, 32, 32) for CIFAR-10, or example_input=<a batch the model accepts>.") from None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    per_sample = {k: Counter({kk: vv // batch for kk, vv in c.items()}) for k, c in counter.counts.items()}
    return dict(positions), dict(macs), per_sample
