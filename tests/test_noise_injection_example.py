"""The noise-injection example (examples/noise_injection_mnist.py) in --quick mode: outputs, resume, η_inf = 0."""

import csv
import time
from pathlib import Path

import pytest
from helpers import load_example, require_mnist

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "noise_injection_mnist.py"


@pytest.fixture(scope="module")
def script():
    require_mnist()
    return load_example(SCRIPT, "noise_injection_mnist")


def _rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_quick_run_outputs_resume_and_zero_noise(script, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the data loader looks for ../shared/data relative to the working directory
    out = tmp_path / "res"
    t0 = time.perf_counter()
    res = script.main(["--quick", "--out", str(out), "--keep-models"])
    assert time.perf_counter() - t0 < 30

    plan = script.QUICK
    csv_path = out / script.CSV_NAME
    cols, rows = _rows(csv_path)
    assert tuple(cols) == ("eta_train", "eta_inference", "train_seed", "inference_seed", "accuracy")
    n_expected = (len(plan.eta_train) * len(plan.train_seeds) * len(plan.eta_inference)
                  * len(plan.inference_seeds))
    assert len(rows) == n_expected == res["rows"]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert {float(r["eta_train"]) for r in rows} == set(plan.eta_train)
    assert (out / script.HEATMAP_NAME).stat().st_size > 0
    assert (out / script.LINES_NAME).stat().st_size > 0

    # η_inf = 0 adds no noise: its accuracy is exactly the digital accuracy of the trained model, both as measured
    # during the run and recomputed from the saved weights
    from safetensors.torch import load_file

    import aimc.data

    x_te, y_te = aimc.data.mnist("test").tensors
    for (eta, seed), dig in res["digital"].items():
        zero = [float(r["accuracy"]) for r in rows if float(r["eta_train"]) == eta and int(r["train_seed"]) == seed
                and float(r["eta_inference"]) == 0.0]
        assert len(zero) == len(plan.inference_seeds)
        assert all(z == dig for z in zero)
        state = load_file(str(out / script.MODELS_DIR / f"eta_train{eta:g}_seed{seed}.safetensors"))
        assert script.accuracy(script.plain_model(state), x_te, y_te) == dig
    assert len(res["digital"]) == len(plan.eta_train) * len(plan.train_seeds)
    # and noise does change the accuracy of at least one run
    assert any(float(r["eta_inference"]) > 0 and float(r["accuracy"]) != res["digital"][
        (float(r["eta_train"]), int(r["train_seed"]))] for r in rows)

    # re-run: nothing is trained again, the CSV is unchanged byte for byte, and it is fast
    before = csv_path.read_bytes()
    mtime = csv_path.stat().st_mtime_ns
    t1 = time.perf_counter()
    res2 = script.main(["--quick", "--out", str(out)])
    assert time.perf_counter() - t1 < 10
    assert res2["trained"] == 0 and res2["digital"] == {}
    assert csv_path.read_bytes() == before
    assert csv_path.stat().st_mtime_ns == mtime


def test_resume_after_partial_csv_and_refuses_other_config(script, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "res"
    out.mkdir()
    plan = script.QUICK
    # a CSV holding only the first model's rows (as after an interruption): only the second one is trained
    first = [{"eta_train": plan.eta_train[0], "eta_inference": b, "train_seed": plan.train_seeds[0],
              "inference_seed": r, "accuracy": 0.5} for b in plan.eta_inference for r in plan.inference_seeds]
    script.write_rows_atomic(out / script.CSV_NAME, first)
    res = script.main(["--quick", "--out", str(out)])
    assert res["trained"] == len(plan.eta_train) * len(plan.train_seeds) - 1
    _, rows = _rows(out / script.CSV_NAME)
    assert len(rows) == len(plan.eta_train) * len(plan.eta_inference) * len(plan.inference_seeds)
    assert not list(out.glob("*.tmp"))

    # rows of another grid (here: one inference seed missing) are refused rather than mixed in
    other = tmp_path / "other"
    other.mkdir()
    script.write_rows_atomic(other / script.CSV_NAME, first[:-1])
    with pytest.raises(SystemExit, match="another configuration"):
        script.main(["--quick", "--out", str(other)])
