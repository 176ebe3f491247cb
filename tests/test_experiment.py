"""Experiment files and `aimc run`: validation, resumption after SIGKILL, atomic results, refusal, workers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

import aimc
from aimc.cli import app
from aimc.experiment.runner import RunDirError, run_experiment
from aimc.experiment.schema import ExperimentConfigError
from aimc.experiment.spec import experiment_from_dict, experiment_to_yaml, load_experiment
from aimc.experiment.store import ResultsStore, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def tiny(**over) -> dict:
    d = {"name": "tiny", "seed": 3, "model": {"name": "digits_cnn"},
         "data": {"name": "digits", "batch_size": 64, "train_limit": 400, "validation": 50},
         "training": [{"name": "fp", "kind": "fp", "epochs": 2, "optimizer": {"name": "adam", "lr": 0.003}},
                      {"name": "hwa", "kind": "hwa", "init": "fp", "epochs": 1,
                       "optimizer": {"name": "sgd", "lr": 0.01}}],
         "baselines": {"fp_digital": "fp"},
         "evaluation": [{"name": "pcm", "analog": "joshi2020", "models": {"fp_direct": "fp", "hwa": "hwa"},
                         "times": [25, 86400], "seeds": 2, "compensations": ["none", "gdc", "gdc+bn"],
                         "n_calib": 64}]}
    d.update(over)
    return d


def test_examples_validate_and_round_trip():
    for f in sorted((ROOT / "examples").glob("*.yaml")):
        exp = load_experiment(f)
        text = experiment_to_yaml(exp)
        assert experiment_to_yaml(experiment_from_dict(yaml.safe_load(text))) == text


@pytest.mark.parametrize("preset", sorted(aimc.presets.PRESETS))
def test_resolved_config_round_trips_for_every_preset(preset):
    exp = experiment_from_dict(tiny(analog={"a": {"preset": preset, "overrides": {"name": "x"}}},
                                    evaluation=[]))
    text = experiment_to_yaml(exp)
    again = experiment_from_dict(yaml.safe_load(text))
    assert again == exp and experiment_to_yaml(again) == text
    cfg = again.analog_config("a")
    assert aimc.AnalogConfig.from_yaml(cfg.to_yaml()) == cfg


def test_every_problem_reported_with_path_value_and_unit():
    bad = tiny(data={"name": "digitz", "batch_size": 0, "colour": "red"})
    bad["evaluation"][0].update(times=[-1], seeds=-2, compensations=["magic"])
    bad["training"][0]["optimizer"]["lr"] = -1
    with pytest.raises(ExperimentConfigError) as e:
        experiment_from_dict(bad)
    paths = {p for p, _ in e.value.problems}
    assert {"data.name", "data.batch_size", "data.colour", "evaluation[0].times[0]", "training[0].optimizer.lr",
            "evaluation[0].compensations[0]"} <= paths
    msg = str(e.value)
    assert "digits, mnist, cifar10" in msg and "(images)" in msg and "(s)" in msg and "-1" in msg


def test_file_errors(tmp_path):
    with pytest.raises(aimc.FileFormatError, match="does not exist"):
        load_experiment(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nmodel: {name: digits_cnn\n")
    with pytest.raises(aimc.FileFormatError, match="line 3"):
        load_experiment(p)
    t = tmp_path / "e.toml"
    t.write_text('name = "t"\n[model]\nname = "digits_cnn"\n[data]\nname = "digits"\n')
    assert load_experiment(t).name == "t"


def test_cli_errors_are_one_paragraph_and_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(tiny(seed=-1)))
    r = CliRunner().invoke(app, ["validate", str(p)])
    assert r.exit_code == 2 and "seed" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "does not exist" in r.output
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny()))
    r = CliRunner().invoke(app, ["validate", str(good)])
    assert r.exit_code == 0 and "valid" in r.output


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    run_experiment(experiment_from_dict(tiny()), out, quiet=True)
    return out


def test_run_directory_contents(finished):
    for name in ("config.yaml", "analog/joshi2020.yaml", "environment.json", "run.log", "results.csv",
                 "summary.md", "checkpoints/fp/last.safetensors", "stages/fp.safetensors",
                 "stages/hwa.aimc.safetensors"):
        assert (finished / name).exists(), name
    t = pd.read_csv(finished / "results.csv")
    assert {"model", "compensation", "t_seconds", "seed", "accuracy", "periphery", "sweep"} <= set(t.columns)
    assert len(t) == 1 + 2 * 2 * 2 * 3 and not t.duplicated(["sweep", "model", "compensation", "t_seconds",
                                                              "seed"]).any()
    hwa = aimc.load(finished / "stages/hwa.aimc.safetensors")
    assert hwa.aimc_config.name == "joshi2020"


def test_rerun_skips_everything_and_changes_nothing(finished):
    before = (finished / "results.csv").read_bytes()
    stage = (finished / "stages/fp.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    run_experiment(experiment_from_dict(tiny()), finished, quiet=True)
    assert (finished / "results.csv").read_bytes() == before
    assert (finished / "stages/fp.safetensors").stat().st_mtime_ns == stage
    # generous bound (a loaded CI machine took 5.3 s): skipping is shown by the bytes and mtimes above; this only
    # catches a rerun that recomputes the sweep (tens of seconds)
    assert time.perf_counter() - t0 < 60


def test_different_experiment_refused_unless_forced(finished, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    with pytest.raises(RunDirError, match="--force"):
        run_experiment(experiment_from_dict(tiny(seed=4)), out, quiet=True)
    run_experiment(experiment_from_dict(tiny(seed=4, evaluation=[])), out, quiet=True, force=True)
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 4


def test_corrupt_files_give_clear_errors(finished, tmp_path):
    import shutil

    out = tmp_path / "c"
    shutil.copytree(finished, out)
    ck = out / "checkpoints/fp/last.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(aimc.FileFormatError, match="last.safetensors"):
        load_checkpoint(ck)
    (out / "results.csv").write_text("sweep,model\npcm,hwa\n")
    with pytest.raises(aimc.FileFormatError, match="results.csv"):
        ResultsStore(out / "results.csv")
    with pytest.raises(aimc.FileFormatError, match="results.csv"):
        run_experiment(experiment_from_dict(tiny()), out, quiet=True)  # never a silent restart
    (out / "results.csv").unlink()
    (out / "stages/fp.safetensors").unlink()
    with pytest.raises(aimc.FileFormatError, match="last.safetensors"):
        run_experiment(experiment_from_dict(tiny()), out, quiet=True)


def test_sweep_test_limit_evaluates_a_fixed_class_balanced_subset(finished, tmp_path):
    """A sweep's test_limit is applied: with 30 test images every accuracy is a multiple of 1/30 (the digits test
    split has hundreds of images, so a full-set accuracy almost never is), and the subset is the same in every cell."""
    import shutil

    d = tiny()
    d["evaluation"][0]["test_limit"] = 30
    out = tmp_path / "limited"
    shutil.copytree(finished, out)  # reuse the trained stages; only the evaluation is redone
    for name in ("results.csv", "config.yaml"):
        (out / name).unlink()
    run_experiment(experiment_from_dict(d), out, quiet=True)
    acc = pd.read_csv(out / "results.csv").query("sweep == 'pcm'")["accuracy"].to_numpy()
    full = pd.read_csv(finished / "results.csv").query("sweep == 'pcm'")["accuracy"].to_numpy()
    assert len(acc) == len(full) == 24
    assert all(abs(a * 30 - round(a * 30)) < 1e-6 for a in acc)
    assert not all(abs(a * 30 - round(a * 30)) < 1e-6 for a in full)


def test_workers_give_identical_results(finished, tmp_path):
    import shutil

    out = tmp_path / "w"
    shutil.copytree(finished, out)
    (out / "results.csv").unlink()
    run_experiment(experiment_from_dict(tiny()), out, quiet=True, workers=2)
    a = pd.read_csv(finished / "results.csv")
    b = pd.read_csv(out / "results.csv")
    key = ["sweep", "model", "compensation", "t_seconds", "seed"]
    pd.testing.assert_frame_equal(a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True))


_DRIVER = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp
from aimc.experiment.runner import _init_worker

def report_and_wait():
    print(os.getpid(), flush=True)
    time.sleep(120)

if __name__ == "__main__":
    spawn = mp.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, initializer=_init_worker, initargs=(None, 1)) as pool:
        pool.submit(report_and_wait)
        time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sweep_workers_die_with_a_killed_driver(tmp_path):
    """A driver killed without Ctrl-C (SIGKILL/SIGTERM from a scheduler) must not leave workers computing."""
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker = int(p.stdout.readline())
    os.kill(worker, 0)  # alive
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{worker}/stat") as f:  # a zombie waiting for its reaper counts as gone
            if f.read().split()[2] == "Z":
                return
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the sweep worker outlived its killed driver")


def _cli(exp_file: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "aimc.cli", "run", str(exp_file), "--out", str(out), "--quiet",
                             "--threads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    d = tiny(model={"name": "tests.slow_model:make"})
    d["training"][0]["epochs"] = 4
    d["evaluation"][0]["seeds"] = 3
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(d))
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert _cli(f, ref).wait(timeout=300) == 0
    # kill once in the middle of training (after the first checkpoint), once during evaluation
    for marker in ("checkpoints/fp/last.safetensors", "results.csv"):
        p = _cli(f, cut)
        deadline = time.time() + 120
        while not (cut / marker).exists() and p.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert p.poll() is None, "the run finished before it could be killed"
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert _cli(f, cut).wait(timeout=300) == 0
    for stage in ("fp", "hwa"):
        a, b = load_file(str(ref / f"stages/{stage}.safetensors")), load_file(str(cut / f"stages/{stage}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(ref / "results.csv"), pd.read_csv(cut / "results.csv"))
    assert not list(cut.rglob("*.tmp"))


def test_disk_full_leaves_nothing_half_written(tmp_path):
    """A write that fails midway (ENOSPC) keeps the previous file intact and leaves no temp file behind."""
    import errno

    from aimc.experiment.store import atomic_write

    target = tmp_path / "results.csv"
    target.write_text("old complete content\n")

    def failing(tmp):
        Path(tmp).write_text("half of the new con")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(OSError):
        atomic_write(target, failing)
    assert target.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    store = ResultsStore(tmp_path / "r2.csv")
    row = {"sweep": "s", "model": "m", "periphery": "p", "compensation": "none", "t_seconds": 1.0, "seed": 0,
           "accuracy": 0.5}
    store.add([row])
    store.add([row])  # a cell is never added twice
    assert len(pd.read_csv(tmp_path / "r2.csv")) == 1


def test_pretrained_weights_from_pytorch_checkpoint_use_weights_only(tmp_path):
    """A foreign .pt checkpoint loads with torch.load(weights_only=True); one that smuggles code is refused."""
    from aimc.experiment.build import load_weights
    from aimc.models import digits_cnn

    src = digits_cnn()
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3},
               tmp_path / "ok.pt")
    dst = digits_cnn()
    load_weights(dst, tmp_path / "ok.pt")
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"state_dict": src.state_dict(), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(aimc.FileFormatError, match="weights_only"):
        load_weights(digits_cnn(), tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(aimc.FileFormatError, match="do not fit"):
        load_weights(aimc.models.mnist_mlp(), tmp_path / "ok.pt")


def test_csv_rows_round_trip_and_refuse_foreign_headers(tmp_path):
    from aimc.experiment.store import read_csv_rows, write_csv_rows

    path = tmp_path / "rows.csv"
    assert read_csv_rows(path, ("a", "b")) == []
    write_csv_rows(path, [{"a": 1, "b": 0.038}, {"a": 2, "b": "x"}], ("a", "b"))
    assert read_csv_rows(path, ("a", "b")) == [{"a": "1", "b": "0.038"}, {"a": "2", "b": "x"}]
    with pytest.raises(aimc.FileFormatError, match="unexpected columns"):
        read_csv_rows(path, ("a", "c"))


def test_misspelt_or_missing_stage_and_sweep_keys_are_listed_not_a_traceback(tmp_path):
    """Issue 21.4: `epoch:` for `epochs:` (a stage that cannot be built) ended in AttributeError in the cross-checks."""
    d = tiny()
    d["training"][0]["epoch"] = d["training"][0].pop("epochs")
    del d["evaluation"][0]["times"]
    p = tmp_path / "typo.yaml"
    p.write_text(yaml.safe_dump(d))
    for cmd in (["validate", str(p)], ["run", str(p), "--out", str(tmp_path / "run"), "--quiet"]):
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == 2 and not isinstance(r.exception, AttributeError), r.output
        assert "training[0].epoch: unknown key (did you mean 'epochs'?" in r.output, r.output
        assert "training[0].epochs: required" in r.output and "evaluation[0].times: required" in r.output
    assert not (tmp_path / "run").exists()


def test_every_bad_time_is_reported_beside_1e400(tmp_path):
    """PyYAML reads 1e400 as text; the negative, NaN and infinite times beside it are reported too."""
    text = yaml.safe_dump(tiny()).replace("- 25\n", "- 25\n  - 1e400\n  - -1\n  - .nan\n  - .inf\n", 1)
    p = tmp_path / "times.yaml"
    p.write_text(text)
    r = CliRunner().invoke(app, ["validate", str(p)])
    assert r.exit_code == 2, r.output
    assert "evaluation[0].times[1]: '1e400' is text, not a number" in r.output
    for i, v in ((2, "-1.0"), (3, "nan"), (4, "inf")):
        assert f"evaluation[0].times[{i}]: {v} is not allowed: must be ≥ 0 (s)" in r.output, r.output


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    """Issue 21.6: `--out afile` said "File exists (afile)"."""
    f = tmp_path / "good.yaml"
    f.write_text(yaml.safe_dump(tiny()))
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    r = CliRunner().invoke(app, ["run", str(f), "--out", str(afile), "--quiet"])
    assert r.exit_code == 2 and "is a file; results need a directory" in r.output, r.output
    r = CliRunner().invoke(app, ["run", str(f), "--out", str(afile / "sub"), "--quiet"])
    assert r.exit_code == 2 and "which is a file" in r.output, r.output
    assert afile.read_text() == "mine\n"


def test_sigint_says_how_to_resume_and_the_printed_command_resumes(tmp_path):
    """Issue 21.6: Ctrl-C during training exited 130 without a word."""
    import shlex

    d = tiny(model={"name": "tests.slow_model:make"}, evaluation=[], baselines={})
    d["training"] = d["training"][:1]
    d["training"][0]["epochs"] = 3
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(d))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    # SIGINT back to its default in the child (a parent started in the background may ignore it)
    p = subprocess.Popen([sys.executable, "-m", "aimc.cli", "run", str(f), "--out", str(out), "--quiet"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (out / "checkpoints/fp/last.safetensors").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, "the run finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Resume where it stopped with the same command" in err, err
    cmd = shlex.split(err.strip().splitlines()[-1])
    assert cmd[:2] == ["aimc", "run"] and cmd[cmd.index("--out") + 1] == str(out) and "--quiet" in cmd
    r = subprocess.run([sys.executable, "-m", "aimc.cli", *cmd[1:]], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "stage fp: resuming after epoch" in (out / "run.log").read_text()


def test_damaged_results_offer_to_keep_the_good_rows(finished, tmp_path):
    """Issue 21.6: a truncated results.csv only offered "move it away to recompute" (every cell)."""
    import shutil

    out = tmp_path / "d"
    shutil.copytree(finished, out)
    res = out / "results.csv"
    lines = res.read_text().splitlines(keepends=True)
    good = lines[:-3]
    good[5] = good[5].rsplit(",", 1)[0] + ",0.123456\n"  # a marker: a kept row is not recomputed
    damaged = "".join(good) + "pcm,hwa,joshi2020,gdc,864"  # cut in the middle of a row
    res.write_text(damaged)
    with pytest.raises(aimc.FileFormatError, match=f"{len(good) - 1} row\\(s\\) are intact.*--keep-good-rows"):
        run_experiment(experiment_from_dict(tiny()), out, quiet=True)
    assert res.read_text() == damaged  # nothing changed without the flag
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(tiny()))
    r = CliRunner().invoke(app, ["run", str(f), "--out", str(out), "--quiet", "--keep-good-rows"])
    assert r.exit_code == 0, r.output
    assert (out / "results.csv.damaged").read_text() == damaged  # nothing lost
    a, b = pd.read_csv(finished / "results.csv"), pd.read_csv(res)
    key = ["sweep", "model", "compensation", "t_seconds", "seed"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) and (b["accuracy"] == 0.123456).sum() == 1  # kept, the other rows recomputed
    pd.testing.assert_frame_equal(a[b["accuracy"] != 0.123456], b[b["accuracy"] != 0.123456])


def test_a_row_cut_inside_its_last_number_is_not_trusted(tmp_path):
    from aimc.experiment.store import DamagedResultsError

    p = tmp_path / "results.csv"
    p.write_text("sweep,model,periphery,compensation,t_seconds,seed,accuracy\n"
                 "pcm,hwa,joshi2020,none,25.0,0,0.9375\npcm,hwa,joshi2020,none,25.0,1,0.93")  # was 0.9375
    with pytest.raises(DamagedResultsError, match="truncated") as e:
        ResultsStore(p)
    assert len(e.value.good) == 1
    s = ResultsStore(p, keep_good_rows=True)
    assert len(s.rows) == 1 and s.rows[0]["seed"] == 0


def test_run_context_imports_neither_the_runner_nor_the_report():
    """What the report and the CLI need from a run lives in aimc.experiment.context: no runner <-> report cycle."""
    code = ("import sys, aimc.experiment.context as c; "
            "assert not {'aimc.experiment.runner', 'aimc.report'} & set(sys.modules), sorted(sys.modules); "
            "from aimc.experiment.runner import _Context; assert _Context is c.RunContext")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_misspelt_zoo_model_argument_is_caught_by_validate():
    d = tiny(model={"name": "mnist_mlp", "kwargs": {"hidde": 250, "num_classes": 10}})
    with pytest.raises(ExperimentConfigError) as e:
        experiment_from_dict(d)
    assert e.value.problems == [("model.kwargs.hidde", "mnist_mlp takes no argument 'hidde' (did you mean 'hidden'? "
                                 "its arguments: hidden, num_classes)")]
    experiment_from_dict(tiny(model={"name": "mnist_mlp", "kwargs": {"hidden": 250}}))


def test_cells_finished_by_workers_are_stored_when_the_pool_stops(tmp_path):
    """After Ctrl-C or a worker's error the rows still queued by the workers are stored, not dropped."""
    import multiprocessing as mp

    from aimc.experiment.sweeps import _drain

    q = mp.get_context("spawn").Queue()
    rows = [{"sweep": "s", "model": "m", "periphery": "p", "compensation": "none", "t_seconds": 25.0, "seed": i,
             "accuracy": 0.5} for i in range(3)]
    for r in rows:
        q.put(r)
    store = ResultsStore(tmp_path / "results.csv")
    _drain(q, store)
    assert sorted(pd.read_csv(tmp_path / "results.csv")["seed"]) == [0, 1, 2]
