"""The README's examples run as written."""

import re
from pathlib import Path

import yaml

from aimc.experiment.spec import experiment_from_dict

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_setup_block_has_exactly_two_commands():
    first = re.search(r"```\w*\n(.*?)```", README, flags=re.S).group(1)
    cmds = [ln for ln in first.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(cmds) == 2 and "aimc demo" in cmds[0] and "pytest" in cmds[1]
    assert (Path(__file__).resolve().parents[1] / ".ci/run").read_text().strip().endswith(cmds[1].strip())


def test_readme_experiment_example_validates():
    exp = experiment_from_dict(yaml.safe_load(_blocks("yaml")[0]))
    assert exp.name == "digits"


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _blocks("python")[0]
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)  # noqa: S102 - the README's own example
    assert (tmp_path / "accuracy_vs_time.png").exists() and (tmp_path / "digits_pcm.safetensors").exists()
    s = ns["res"].summary()
    assert len(s) == 4 * 3 and s["mean"].between(0, 1).all()
