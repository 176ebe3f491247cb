"""Fast evaluation options: ``torch.compile`` (``compile: true`` / ``aimc.evaluate(..., compile=True)``) and
channels-last inputs give the same outputs and accuracies as plain eager execution (up to float rounding) for ideal
and realistic periphery, and keep aimc's input checks."""

import pandas as pd
import pytest
import torch
from torch import nn

import aimc
from aimc.evaluation import accuracy, evaluate_seed

KEYS = ["sweep", "model", "compensation", "t_seconds", "seed"]

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),  # dynamo's notes on graph breaks
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # raised inside torch's own modules


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 5)).eval()


def _data(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return [(x[i:i + 32], torch.randint(0, 5, (32,), generator=g)) for i in range(0, n, 32)]


@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default"])
def test_compiled_forward_matches_eager(preset: str) -> None:
    model = aimc.convert(_cnn(), aimc.presets.get(preset))
    aimc.program(model, seed=3)
    x = _data()[0][0]
    compiled = torch.compile(model)
    with torch.inference_mode():
        aimc.at_time(model, 3600.0, seed=3)  # re-drawing the time also resets the output-noise stream
        eager = model(x)
        aimc.at_time(model, 3600.0, seed=3)
        comp = compiled(x)
    torch.testing.assert_close(comp, eager, rtol=1e-4, atol=1e-4 * float(eager.abs().max()))


def test_compiled_model_does_not_break_its_graph_in_the_input_checks() -> None:
    """``aimc.nn.checks`` asks ``torch.compiler.is_compiling()`` before its ``ContextVar``, which dynamo cannot
    trace: with the other order every analog layer broke the graph there, and compiled ResNet-32 (``joshi2020``)
    ran as slowly as eager (1.02x instead of 0.71x, ``benchmarks/bench_fast.py``)."""
    torch.manual_seed(0)
    model = aimc.convert(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                                       nn.Linear(4 * 8 * 8, 3)).eval(), aimc.presets.joshi2020())
    aimc.program(model, seed=0)
    aimc.at_time(model, 3600.0, seed=0)
    torch._dynamo.reset()
    with torch.inference_mode():
        explained = torch._dynamo.explain(model)(torch.randn(2, 1, 8, 8))
    where = [frame.filename for reason in explained.break_reasons for frame in reason.user_stack]
    assert not [f for f in where if f.endswith(("aimc/nn/checks.py", "aimc\\nn\\checks.py"))]


@pytest.mark.parametrize("option", ["compile", "channels_last"])
def test_evaluate_seed_with_a_speed_option_equals_plain_accuracies(option: str) -> None:
    data = _data(128)
    model = aimc.convert(_cnn(), aimc.presets.joshi2020())
    cells = [(25.0, "none"), (86400.0, "gdc")]
    plain = [r["accuracy"] for r in evaluate_seed(model, data, 0, cells)]
    fast = [r["accuracy"] for r in evaluate_seed(model, data, 0, cells, **{option: True})]
    assert fast == pytest.approx(plain, abs=1 / 128 + 1e-12)  # at most one argmax flip from rounding


def test_compiled_accuracy_still_refuses_non_finite_input() -> None:
    model = aimc.convert(_cnn(), aimc.presets.joshi2020())
    aimc.program(model, seed=0)
    aimc.at_time(model, 25.0, seed=0)
    (x, y), = _data(32)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(aimc.NonFiniteError, match="NaN/Inf"):
        accuracy(model, [(x, y)], forward=torch.compile(model))


def test_channels_last_forward_matches_contiguous() -> None:
    data = _data(128)
    model = aimc.convert(_cnn(), aimc.presets.joshi2020())
    aimc.program(model, seed=0)
    aimc.at_time(model, 25.0, seed=0)
    x = data[0][0]
    with torch.inference_mode():
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), model(x),
                                   rtol=1e-4, atol=1e-5)


def test_experiment_compile_and_channels_last_give_the_plain_results(tmp_path) -> None:  # noqa: ANN001
    import shutil

    from test_experiment import tiny

    from aimc.experiment.runner import run_experiment
    from aimc.experiment.spec import experiment_from_dict

    plain = run_experiment(experiment_from_dict(tiny()), tmp_path / "plain", quiet=True)
    fast = tmp_path / "fast"
    shutil.copytree(plain, fast)  # same trained stages; only the sweep is re-run
    (fast / "results.csv").unlink()
    (fast / "config.yaml").unlink()
    run_experiment(experiment_from_dict(tiny(compile=True, channels_last=True)), fast, quiet=True)
    a = pd.read_csv(plain / "results.csv").sort_values(KEYS).reset_index(drop=True)
    b = pd.read_csv(fast / "results.csv").sort_values(KEYS).reset_index(drop=True)
    assert len(a) == len(b) == 2 * 2 * 2 * 3 + 1
    from aimc.data.small import digits

    one_image = 1 / len(digits("test"))  # at most one argmax flip per cell from float rounding
    assert (a["accuracy"] - b["accuracy"]).abs().max() <= one_image + 1e-12
