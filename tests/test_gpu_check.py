"""benchmarks/gpu_check.py on a machine without CUDA: exit 2 with a message, or (--allow-cpu) a tiny run of every
part on the CPU; its chip comparison tells two chips apart; its budget guard skips and interrupts parts."""

import json
import math
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import load_example

CUDA_TESTS = ("tests/test_rng.py::test_cpu_and_cuda_give_the_same_numbers",
              "tests/test_regeneration.py::test_same_chip_on_cpu_and_cuda",
              "tests/test_forward_sync.py::test_analog_forward_makes_no_cuda_synchronisation[joshi2020]",
              "tests/test_gpu_equality.py::test_cuda_generator_words_bit_identical_and_normals_within_ulps")


BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gc():
    mod = load_example(BENCH / "gpu_check.py", "gpu_check_under_test")
    yield mod
    del sys.modules["gpu_check_under_test"]


@pytest.fixture(scope="module")
def ce():
    mod = load_example(BENCH / "_chip_equality.py", "chip_equality_under_test")
    yield mod
    del sys.modules["chip_equality_under_test"]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the pytest child process sees no GPU either


def test_without_cuda_it_exits_2_and_says_why(gc, no_cuda, capsys):
    assert gc.main([]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--allow-cpu" in err


def test_allow_cpu_runs_a_tiny_version_of_every_part(gc, no_cuda, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert gc.main(["--allow-cpu", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["tiny"] and r["device"] == "cpu"
    # tests: the CUDA tests are found (these among them) and, without a GPU, all skip
    t = r["tests"]
    assert t["status"] == "NO-GPU" and set(CUDA_TESTS) <= set(t["tests"])
    assert t["skipped"] == t["selected"] and t["passed"] == t["failed"] == 0
    assert not any("test_gpu_check" in x for x in t["tests"])
    # equality: CPU against CPU, so regeneration must be exact
    e = r["equality"]
    assert e["status"] == "PASS" and set(e["chips"]) == {"joshi2020", "aihwkit_default", "hermes"}
    assert all(v == 0 for d in [e["rng"], *e["chips"].values()] for v in d.values())
    for part, presets in gc.TIMED_PRESETS.items():
        assert r[part]["status"] == "RAN"
        for p in presets:
            m = r[part][p]
            assert m["finite"] and m["params"] > 0
            for k in ("program_s", "at_time_s", "plain_forward_s", "analog_forward_s", "forward_ratio"):
                assert 0 < m[k] < math.inf, (part, p, k)
            assert math.isnan(m["analog_peak_gib"])  # GPU memory: not on a CPU run
    assert re.search(r"summary: tests NO-GPU \(\d+ s\), equality PASS \(\d+ s\), resnet RAN \(\d+ s\), llm RAN", text)


def test_chip_comparison_tells_chips_apart(ce):
    cpu = torch.device("cpu")
    assert ce.ulp_distance(torch.tensor([1.0]), torch.nextafter(torch.tensor([1.0]), torch.tensor([2.0]))) == 1
    assert ce.ulp_distance(torch.zeros(3), torch.zeros(2)) == math.inf
    a = ce.programmed("joshi2020", cpu, 3, 86400.0)
    same = ce.chip_distances(a, ce.programmed("joshi2020", cpu, 3, 86400.0))
    assert ce.chip_verdict(same) and all(v == 0 for v in same.values())
    other = ce.chip_distances(a, ce.programmed("joshi2020", cpu, 4, 86400.0))
    assert not ce.chip_verdict(other) and other["seeds_differing"] > 0 and other["g_prog_ulp"] > ce.ULP_COND
    # another read seed alone (same programming): only the drifted weights differ
    b = ce.programmed("joshi2020", cpu, 3, None)
    import aimc
    aimc.at_time(b, 86400.0, seed=5, gdc=False)
    d = ce.chip_distances(a, b)
    assert d["g_prog_ulp"] == 0 and d["weight_ulp"] > ce.ULP_WEIGHT and not ce.chip_verdict(d)
    # a weight off by a few ulp of the matrix's largest weight passes, by many fails
    c = ce.programmed("joshi2020", cpu, 3, 86400.0)
    mat = c[0].analog
    big = mat.w_eff.abs().max()
    ulp = torch.nextafter(big, big + 1) - big
    mat.w_eff.view(-1)[0] += 2 * ulp
    assert ce.chip_verdict(ce.chip_distances(a, c))
    mat.w_eff.view(-1)[0] += 100 * ulp
    assert not ce.chip_verdict(ce.chip_distances(a, c))


def test_budget_guard_skips_and_interrupts(gc, no_cuda, capsys):
    assert gc.main(["--allow-cpu", "--budget", "0", "--parts", "equality", "llm"]) == 0
    text = capsys.readouterr().out
    assert text.count("SKIPPED (rest of this part)") == 2 and "equality SKIPPED (0 s), llm SKIPPED (0 s)" in text
    b = gc.Budget(0.3)
    t = time.perf_counter()
    with pytest.raises(gc.OutOfBudget), b.alarm():
        time.sleep(5)
    assert time.perf_counter() - t < 2
    with b.alarm():  # no time left: the alarm rings at once
        pass


def test_an_error_fails_its_part_and_the_next_parts_still_run(gc, no_cuda, monkeypatch, capsys, tmp_path):
    def broken(*_):
        raise RuntimeError("CUDA error: an illegal memory access")

    monkeypatch.setattr(gc, "part_equality", broken)
    out = tmp_path / "r.json"
    assert gc.main(["--allow-cpu", "--parts", "equality", "llm", "--json", str(out)]) == 1
    r = json.loads(out.read_text())
    assert r["equality"]["status"] == "FAIL" and "illegal memory access" in r["equality"]["why"]
    assert r["llm"]["status"] == "RAN" and r["llm"]["joshi2020"]["finite"]
    assert "FAIL: RuntimeError" in capsys.readouterr().out
