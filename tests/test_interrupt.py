"""Nothing lost, nothing confusing (issue 21 items 1, 3, 5): Ctrl-C during aimc.evaluate leaves the model as it came
in; bad labels raise DataError instead of scoring 0 %; float64 inputs are cast (evaluation) or named (layers)."""

import pytest
import torch
from torch import nn

import aimc
from aimc.nn.tile import AnalogMatrix
from tests.helpers import batches, small_cnn


def _state(model: nn.Module) -> dict:
    """Everything evaluate could change: state dict (device state, BN statistics), modes, BN momenta, the output
    noise generators' states."""
    sd = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}
    gens = [m._forward_gen.get_state() if m._forward_gen is not None else None
            for m in model.modules() if isinstance(m, AnalogMatrix)]
    modes = [m.training for m in model.modules()]
    moms = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return {"sd": sd, "gens": gens, "modes": modes, "moms": moms}


def _assert_same(a: dict, b: dict) -> None:
    assert a["sd"].keys() == b["sd"].keys()
    for k in a["sd"]:
        torch.testing.assert_close(a["sd"][k], b["sd"][k], rtol=0, atol=0, equal_nan=True, msg=k)
    assert a["modes"] == b["modes"] and a["moms"] == b["moms"]
    assert len(a["gens"]) == len(b["gens"])
    for x, y in zip(a["gens"], b["gens"]):
        assert (x is None and y is None) or torch.equal(x, y)


class Interrupting:
    """Yields ``n_ok`` batches, then raises KeyboardInterrupt as Ctrl-C would."""

    def __init__(self, data, n_ok=1):
        self.data, self.n_ok = data, n_ok

    def __iter__(self):
        yield from self.data[: self.n_ok]
        raise KeyboardInterrupt


def _analog(programmed: bool, train_mode: bool = False, preset: str = "joshi2020") -> nn.Module:
    a = aimc.convert(small_cnn(), aimc.presets.get(preset))
    if programmed:  # a user's chip: programmed with seed 7, one hour, one forward pass (output noise drawn)
        aimc.program(a, seed=7)
        aimc.at_time(a, 3600.0, seed=7)
        with torch.no_grad():
            a.eval()(batches()[0][0])
    return a.train(train_mode)


@pytest.mark.parametrize("programmed", [False, True])
def test_ctrl_c_in_bn_calibration_leaves_the_model_as_it_came_in(programmed):
    a = _analog(programmed)
    before = _state(a)
    with pytest.raises(KeyboardInterrupt):
        aimc.evaluate(a, batches(), [25.0, 3600.0], [0], ("gdc", "gdc+bn"), calib=Interrupting(batches(seed=3)),
                      progress=False)
    _assert_same(before, _state(a))


def test_ctrl_c_while_scoring_after_bn_calibration_restores_bn():
    a = _analog(True, train_mode=True)
    before = _state(a)
    with pytest.raises(KeyboardInterrupt):
        aimc.evaluate(a, Interrupting(batches(), 2), [3600.0], [0], "gdc+bn", calib=batches(seed=3), progress=False)
    _assert_same(before, _state(a))


def test_ctrl_c_between_cells_restores_the_model():
    """KeyboardInterrupt raised by the caller's side (the progress bar) while evaluate_seed is suspended."""
    a = _analog(True)
    before = _state(a)
    calls = []

    class Bars:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def add(self, *a, **k):
            return None

        def advance(self, *a):
            calls.append(1)
            raise KeyboardInterrupt

    import aimc.evaluation as ev

    orig, ev.ProgressBars = ev.ProgressBars, Bars
    try:
        with pytest.raises(KeyboardInterrupt):
            aimc.evaluate(a, batches(), [25.0, 3600.0], [0], "gdc+bn", calib=batches(seed=3))
    finally:
        ev.ProgressBars = orig
    assert calls == [1]
    _assert_same(before, _state(a))


@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default"])  # the latter draws output noise per read
def test_finished_evaluate_leaves_the_model_as_it_came_in(preset):
    a = _analog(True, preset=preset)
    before = _state(a)
    aimc.evaluate(a, batches(), [25.0, 86400.0], [0, 1], ("none", "gdc", "gdc+bn"), calib=batches(seed=3),
                  progress=False)
    _assert_same(before, _state(a))
    # and the chip computes what an untouched twin computes (cached weights, noise streams), bit for bit
    b = _analog(True, preset=preset)
    x = batches()[1][0]
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def test_recalibrate_bn_interrupted_keeps_statistics():
    a = _analog(True)
    before = _state(a)
    with pytest.raises(KeyboardInterrupt):
        aimc.recalibrate_bn(a, Interrupting(batches(seed=3), 2))
    _assert_same(before, _state(a))


# ---- labels -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad,match", [
    (lambda y: y.float(), "dtype torch.float32"),
    (lambda y: y.double(), "dtype torch.float64"),
    (lambda y: y + 5, "range from"),  # labels ≥ number of classes (5)
    (lambda y: y - 1, "range from -1"),
    (lambda y: y.bool(), "dtype torch.bool"),
    (lambda y: nn.functional.one_hot(y, 5), "shape"),
])
def test_bad_labels_raise_data_error(bad, match):
    a = aimc.convert(small_cnn(), aimc.presets.joshi2020())
    data = [(x, bad(y)) for x, y in batches()]
    with pytest.raises(aimc.DataError, match=match):
        aimc.evaluate(a, data, [25.0], [0], "gdc", progress=False)


# ---- dtypes -------------------------------------------------------------------------------------------------------
def test_float64_inputs_are_cast_to_the_model_dtype():
    """float64 data (numpy's default) gives the same table as float32 data: those float64 values are exact float32
    values, so the cast is lossless here; BN calibration casts as well."""
    a = aimc.convert(small_cnn(), aimc.presets.aihwkit_default())
    kw = dict(times=[25.0, 3600.0], seeds=[0], compensation=("gdc", "gdc+bn"), n_calib=32, progress=False)
    ref = aimc.evaluate(a, batches(), calib=batches(seed=3), **kw).table
    d64 = [(x.double(), y) for x, y in batches()]
    c64 = [x.double() for x, _ in batches(seed=3)]
    got = aimc.evaluate(a, d64, calib=c64, **kw).table
    torch.testing.assert_close(torch.tensor(got["accuracy"].to_numpy()), torch.tensor(ref["accuracy"].to_numpy()),
                               rtol=0, atol=0)
    # numpy arrays straight from a user's pipeline (float64 images, int64 labels)
    np_data = [(x.double().numpy(), y.numpy()) for x, y in batches()]
    got = aimc.evaluate(a, np_data, calib=[x.numpy() for x, _ in batches(seed=3)], **kw).table
    assert got["accuracy"].tolist() == ref["accuracy"].tolist()


@pytest.mark.parametrize("preset", ["joshi2020", "aihwkit_default"])
@pytest.mark.parametrize("programmed", [False, True])
def test_analog_layers_name_a_wrong_input_dtype(preset, programmed):
    a = aimc.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)),
                     aimc.presets.get(preset)).eval()
    if programmed:
        aimc.program(a, seed=0)
        aimc.at_time(a, 25.0, seed=0)
    x = torch.randn(2, 3, 8, 8)
    msg = r"layer '0': the input is torch\.float64 but the weights are torch\.float32"
    with pytest.raises(aimc.DataError, match=msg):
        a(x.double())
    with pytest.raises(aimc.DataError, match=r"layer '2'.*float64"):
        a[2](torch.randn(2, 144, dtype=torch.float64))
    assert a(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed dtypes under autocast are torch's business
        assert a(x).shape == (2, 3)
