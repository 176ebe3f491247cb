"""Bridges to a real chip: export target conductances per tile, import measured ones in place of the model.

Round trip: export the targets of a trained digits CNN, "measure" chips by sampling the PCM model into the import
format, load those measurements, and get the same accuracy distribution over chips as the model itself.
"""

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

import aimc
from aimc.devices import PCM
from aimc.measured import (
    LAYOUT_COLUMNS,
    MeasuredDevice,
    export_targets,
    load_measured,
    read_conductance_table,
    sample_measurements,
    target_table,
)


def tiled_model():
    from helpers import small_cnn

    cfg = dataclasses.replace(aimc.presets.joshi2020(), mapping=aimc.MappingConfig(tile_rows=16, tile_cols=16))
    return aimc.convert(small_cnn(), cfg)


def test_export_writes_one_csv_per_tile_with_the_mapping(tmp_path):
    """Property: per tile, g+ − g− = W·g_max/w_max at the stated matrix coordinates, and the tile-local crossbar
    coordinates stay inside the tile."""
    m = tiled_model()
    paths = export_targets(m, tmp_path)
    manifest = pd.read_csv(paths[0])
    n_tiles = sum(mat.layout.n_tiles for _, l in aimc.nn.convert.analog_layers(m)
                  for mat, _ in l.analog_matrices().values())
    assert len(manifest) == n_tiles == len(paths) - 1 and n_tiles > 4
    for _, row in manifest.iterrows():
        t = pd.read_csv(tmp_path / row["file"])
        assert list(t.columns) == [*LAYOUT_COLUMNS, "g_plus_uS", "g_minus_uS"]
        assert (t["row"] < row["rows"]).all() and (t["col"] < row["cols"]).all() and len(t) == row["rows"] * row["cols"]
        assert ((t["g_plus_uS"] == 0) | (t["g_minus_uS"] == 0)).all()
        assert t[["g_plus_uS", "g_minus_uS"]].max().max() <= 25.0 + 1e-4
    full = read_conductance_table(tmp_path)
    for name, layer in aimc.nn.convert.analog_layers(m):
        for sfx, (mat, w) in layer.analog_matrices().items():
            t = full[full["layer"].astype(str) == name + sfx]
            w2 = w.detach().reshape(w.shape[0], -1)
            w_max = aimc.mapping.expand_rows(aimc.mapping.weight_scale(w2, mat.layout, mat.config.mapping.scale),
                                             mat.layout)
            want = (w2 / w_max * 25.0).numpy()[t["out_index"].to_numpy(), t["in_index"].to_numpy()]
            np.testing.assert_allclose(t["g_plus_uS"] - t["g_minus_uS"], want, atol=1e-5)


def test_measured_conductances_replace_the_model_exactly_at_measured_times():
    m = tiled_model()
    targets = target_table(m)
    meas = sample_measurements(targets, PCM(), [25.0, 3600.0], seed=3)
    load_measured(m, meas)
    aimc.program(m, seed=0)
    aimc.at_time(m, 3600.0, seed=7, gdc=False)
    for name, layer in aimc.nn.convert.analog_layers(m):
        mat, _ = layer.analog_matrices()[""]
        assert isinstance(mat.config.device, MeasuredDevice)
        t = meas[(meas["layer"].astype(str) == name) & (meas["t_seconds"] == 3600.0)]
        o, i = torch.tensor(t["out_index"].to_numpy()), torch.tensor(t["in_index"].to_numpy())
        w_max = aimc.mapping.expand_rows(mat.w_max, mat.layout)[o, i].numpy()
        got = mat.effective_weight()[o, i].numpy()
        np.testing.assert_allclose(got, (t["g_plus_uS"] - t["g_minus_uS"]).to_numpy() * w_max / 25.0, rtol=1e-5,
                                   atol=1e-7)
    # the seed no longer matters at a measured time (one chip), and between times it interpolates in log t
    dev = next(iter(aimc.nn.convert.analog_layers(m)))[1].analog.config.device
    mid = dev.measured_at(float(np.exp(0.5 * (np.log(45.0) + np.log(3620.0)))) - 20.0)
    torch.testing.assert_close(mid, 0.5 * (dev.g[0] + dev.g[1]))
    with pytest.raises(aimc.StateError, match="outside the measured times"):
        aimc.at_time(m, 86400.0, seed=0)
    m2 = tiled_model()
    load_measured(m2, meas, outside="hold")
    aimc.program(m2, seed=0)
    aimc.at_time(m2, 86400.0, seed=0)  # holds the 3600 s measurement


def test_partial_measurements_and_consistency_checks():
    m = tiled_model()
    targets = target_table(m)
    first = targets["layer"].iloc[0]
    meas = sample_measurements(targets[targets["layer"] == first], PCM(), [25.0], seed=1)
    counts = load_measured(m, meas)
    assert list(counts) == [str(first)]
    others = [l for n, l in aimc.nn.convert.analog_layers(m) if n != str(first)]
    assert all(isinstance(l.analog.config.device, PCM) for l in others)  # the rest keeps the model
    aimc.program(m, seed=0)
    aimc.at_time(m, 25.0, seed=0)
    # pairs measured at one time but not another, unknown layers, bad coordinates
    two = sample_measurements(targets[targets["layer"] == first], PCM(), [25.0, 60.0], seed=1)
    with pytest.raises(aimc.DataError, match="measured at some times but not at all"):
        load_measured(tiled_model(), two.iloc[:-1])
    with pytest.raises(aimc.DataError, match="not analog matrices"):
        load_measured(tiled_model(), meas.assign(layer="nope"))
    with pytest.raises(aimc.DataError, match="outside their tile"):
        load_measured(tiled_model(), meas.assign(row=meas["row"] + 100))
    with pytest.raises(aimc.DataError, match="lack column"):
        load_measured(tiled_model(), meas.drop(columns="t_seconds"))
    # the weights changed after loading: programming is refused
    with torch.no_grad():
        for _, l in aimc.nn.convert.analog_layers(m):
            l.weight.mul_(0.5).add_(0.01)
    with pytest.raises(aimc.StateError, match="weights changed"):
        aimc.program(m, seed=0)


def test_chip_column_selects_a_chip(tmp_path):
    m = tiled_model()
    targets = target_table(m)
    both = pd.concat([sample_measurements(targets, PCM(), [25.0], seed=s).assign(chip=s) for s in (0, 1)])
    with pytest.raises(aimc.DataError, match="2 chips"):
        load_measured(m, both)
    both.to_csv(tmp_path / "chips.csv", index=False)
    load_measured(m, tmp_path / "chips.csv", chip=1)
    dev = next(iter(aimc.nn.convert.analog_layers(m)))[1].analog.config.device
    assert dev.source == str(tmp_path / "chips.csv") and len(dev.sha256) == 64


def test_round_trip_gives_the_models_accuracy_distribution(tmp_path):
    """Export → "measure" 8 chips by sampling the PCM model → import → evaluate: the accuracy distribution over chips
    matches ``aimc.evaluate`` of the statistical model over 8 seeds (means within 3 combined standard errors
    + 0.5 %)."""
    from test_device_fit import digits_model

    model, test = digits_model()
    analog = aimc.convert(model, aimc.presets.joshi2020())
    export_targets(analog, tmp_path)
    targets = read_conductance_table(tmp_path)
    times = [25.0, 3600.0, 86400.0]
    rows = []
    for chip in range(8):
        m = copy.deepcopy(analog)
        load_measured(m, sample_measurements(targets, PCM(), times, seed=100 + chip))
        r = aimc.evaluate(m, test, times=times, seeds=[0], compensation=("none", "gdc"), progress=False)
        rows.append(r.table)
    meas = pd.concat(rows).groupby(["compensation", "t_seconds"])["accuracy"].agg(["mean", "std", "count"])
    model_t = aimc.evaluate(analog, test, times=times, seeds=range(8), compensation=("none", "gdc"), progress=False)
    ref = model_t.table.groupby(["compensation", "t_seconds"])["accuracy"].agg(["mean", "std", "count"])
    se = np.sqrt(meas["std"] ** 2 / meas["count"] + ref["std"] ** 2 / ref["count"])
    diff = (meas["mean"] - ref["mean"]).abs()
    assert (diff <= 3 * se + 0.005).all(), pd.DataFrame({"measured": meas["mean"], "model": ref["mean"], "se": se})
    assert ref.loc[("none", 86400.0), "mean"] < ref.loc[("gdc", 86400.0), "mean"] - 0.2  # drift is really there


def test_export_targets_command(tmp_path):
    from aimc.cli_devices import export_targets as cmd

    app = typer.Typer()
    app.command("export-targets")(cmd)
    app.command("noop")(lambda: None)
    m = tiled_model()
    aimc.save(m, tmp_path / "model.safetensors", arch="tests.helpers:small_cnn")
    r = CliRunner().invoke(app, ["export-targets", str(tmp_path / "model.safetensors"), "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "t" / "manifest.csv").is_file()
    assert len(read_conductance_table(tmp_path / "t")) == len(target_table(m))
    r = CliRunner().invoke(app, ["export-targets", str(tmp_path / "missing"), "--out", str(tmp_path / "t2")])
    assert r.exit_code == 2 and "neither a model file" in r.output
