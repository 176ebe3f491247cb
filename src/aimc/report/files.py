"""Reading a run directory for the report: the experiment, results.csv, each stage's weights and training history
(from the safetensors metadata the runner writes), run.log's sessions, and the digital accuracy of every stage.

Only the run directory's files are read (and the data set, to score stages digitally); nothing of the runner's
in-memory state or private helpers is used.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aimc.experiment.store import result_columns

log = logging.getLogger("aimc.report")


@dataclass
class Run:
    """A run directory: its experiment, its results table and the problems met reading them."""

    path: Path
    exp: Any
    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    def text(self, rel: str) -> str | None:
        p = self.path / rel
        try:
            return p.read_text()
        except (OSError, UnicodeDecodeError):
            return None

    @property
    def metric(self):  # noqa: ANN201 - an aimc.metrics.Metric
        """The run's metric (``metric:`` of the experiment; accuracy for runs from before that key)."""
        return self.exp.scorer()

    @property
    def value(self) -> str:
        """The value column of results.csv: the metric's name."""
        return self.metric.name

    def values(self, rows: pd.DataFrame) -> list[float]:
        """The metric of each row of ``rows`` (fractions for accuracies)."""
        return [float(v) for v in rows[self.value]]

    def sweep_rows(self, name: str) -> pd.DataFrame:
        return self.table[self.table["sweep"] == name]

    def baseline_rows(self) -> pd.DataFrame:
        return self.table[self.table["sweep"] == "baseline"]


def load(run_dir: Path) -> Run:
    from aimc.errors import FileFormatError
    from aimc.experiment.spec import load_run_experiment
    from aimc.experiment.store import ResultsStore

    exp = load_run_experiment(run_dir)
    problems = []
    try:
        table = ResultsStore(run_dir / "results.csv", value=exp.metric).table()
    except FileFormatError as err:
        problems.append(str(err))
        table = pd.DataFrame(columns=result_columns(exp.metric))
    return Run(run_dir, exp, table, problems)


# ---- stage weights -------------------------------------------------------------------------------------------------
def stage_file(run: Run, stage: str) -> Path:
    """The final weights of a training stage: ``stages/<stage>.safetensors`` (plain model keys)."""
    return run.path / "stages" / f"{stage}.safetensors"


def stage_model(run: Run, stage: str):  # noqa: ANN201 - a torch.nn.Module
    """A plain model (the experiment's architecture) holding the final weights of ``stage``, on the CPU.

    ``"model"`` is the model section's network itself (its pretrained weights, or its seeded initialisation). For a
    stage, every key of the model must be in the stage file (``aimc.experiment.build.load_weights`` checks), so the
    model section's pretrained file is not read (the report can be rebuilt where it is missing, or from another
    working directory) and the seeded initialisation is overwritten.
    """
    import dataclasses

    import torch

    from aimc.experiment.build import build_model, load_weights
    from aimc.nn.tile import derive_seed

    spec = run.exp.model if stage == "model" else dataclasses.replace(run.exp.model, pretrained=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(run.exp.seed, "init") % 2**63)
        model = build_model(spec)
    if stage != "model":
        load_weights(model, stage_file(run, stage))
    return model.eval()


# ---- training histories --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageHistory:
    """Per-epoch records of one training stage (``epoch``, ``loss``, ``lr``, ``seconds``, ``val_*``,
    ``checkpoint_seconds``) and where they were read from."""

    name: str
    kind: str
    init: str
    epochs: int  # planned
    records: tuple[dict[str, Any], ...]
    finished: bool
    source: str | None  # run-relative path, or None when the stage has not started

    def total(self, key: str) -> float:
        return float(sum(float(r.get(key, 0.0)) for r in self.records))

    def val_keys(self) -> list[str]:
        return sorted({k for r in self.records for k in r if k.startswith("val_")})


def _metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - a missing or corrupt file: the history is simply unknown
        return None


def _history(meta: dict[str, str], key: str) -> list[dict[str, Any]]:
    """The per-epoch records in a weights file's metadata: under ``key`` as ``{"history": [...]}`` (``aimc_stage``
    of a stage file, ``extra`` of a checkpoint), or, in files of older runs, as a JSON list under ``history``."""
    try:
        if key in meta:
            records = json.loads(meta[key]).get("history", [])
        else:
            records = json.loads(meta.get("history", "[]"))
    except (json.JSONDecodeError, AttributeError):
        return []
    return [r for r in records if isinstance(r, dict) and "epoch" in r] if isinstance(records, list) else []


_EPOCH = re.compile(r"stage (\S+) epoch (\d+)/(\d+): (.*)$")


def logged_epochs(run: Run) -> dict[str, list[dict[str, Any]]]:
    """Per stage, the epoch records of run.log's lines ``stage fp epoch 3/30: loss 0.12, lr 0.001, ...`` (the last
    line of each epoch when a resumed run repeated it)."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for line in (run.text("run.log") or "").splitlines():
        m = _EPOCH.search(line)
        if not m:
            continue
        rec: dict[str, Any] = {"epoch": int(m.group(2))}
        for item in m.group(4).split(", "):
            k, _, v = item.partition(" ")
            try:
                rec[k] = float(v)
            except ValueError:
                continue
        out.setdefault(m.group(1), {})[rec["epoch"]] = rec
    return {k: [v[e] for e in sorted(v)] for k, v in out.items()}


def stage_histories(run: Run) -> list[StageHistory]:
    """The training history of every stage: from ``stages/<stage>.safetensors`` once it has finished, else from its
    last checkpoint (an interrupted stage); from run.log's epoch lines where those files hold none. Only the files'
    JSON metadata is read, never the tensors."""
    logged = None
    out = []
    for st in run.exp.training:
        records, finished, source = [], False, None
        meta = _metadata(stage_file(run, st.name))
        if meta is not None:
            finished, source = True, f"stages/{st.name}.safetensors"
            records = _history(meta, "aimc_stage")
        else:
            ckpt = run.path / "checkpoints" / st.name / "last.safetensors"
            meta = _metadata(ckpt)
            if meta is not None:
                source = f"checkpoints/{st.name}/last.safetensors"
                records = _history(meta, "extra")
        if not records:
            logged = logged_epochs(run) if logged is None else logged
            if logged.get(st.name):
                records, source = logged[st.name], "run.log"
        out.append(StageHistory(st.name, st.kind, st.init, st.epochs, tuple(records), finished, source))
    return out


# ---- run.log -----------------------------------------------------------------------------------------------------
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ [\w.]+: (.*)$")


@dataclass
class Session:
    """One invocation of ``aimc run`` as run.log records it (a resumed run appends another)."""

    started: str
    start_s: float  # seconds since the epoch (local time of the log)
    eval_start_s: float | None = None
    eval_end_s: float | None = None  # the first report or "finished" line after the evaluation started
    last_s: float = 0.0
    finished_s: float | None = None  # the run's own "finished in N s"
    epochs: int = 0  # epoch lines logged
    baselines: dict[str, float] = field(default_factory=dict)  # label -> accuracy (fraction)


def _stamp(date: str, ms: str) -> float:
    return time.mktime(time.strptime(date, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000


def log_sessions(run: Run) -> list[Session]:
    """The sessions of run.log: when each started, when its evaluation started, and its duration if it finished."""
    text = run.text("run.log") or ""
    sessions: list[Session] = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        t, msg = _stamp(m.group(1), m.group(2)), m.group(3)
        if msg.startswith("run ") and " in " in msg:
            sessions.append(Session(m.group(1), t, last_s=t))
            continue
        if not sessions:
            continue
        s = sessions[-1]
        s.last_s = t
        if msg.startswith("evaluation:") and s.eval_start_s is None:
            s.eval_start_s = t
        elif _EPOCH.search(msg):
            s.epochs += 1
        elif msg.startswith("report written") or msg.startswith("finished in"):
            if s.eval_start_s is not None and s.eval_end_s is None:
                s.eval_end_s = t
            if (f := re.match(r"finished in (\d+(?:\.\d+)?) s", msg)) is not None:
                s.finished_s = float(f.group(1))
        elif (b := re.match(r"baseline (\S+) \(stage \S+, digital\): ([0-9.]+) %", msg)) is not None:
            s.baselines[b.group(1)] = float(b.group(2)) / 100
    return sessions


def results_mtime(run: Run) -> float | None:
    try:
        return (run.path / "results.csv").stat().st_mtime
    except OSError:
        return None


# ---- digital accuracy of every stage -------------------------------------------------------------------------------
def digital_accuracies(run: Run, histories: list[StageHistory]) -> dict[str, float | str]:
    """Test accuracy (fraction; the run's metric, e.g. top-5 accuracy) of every finished stage's weights in floating
    point, or why it is unknown.

    A stage named by a baseline takes that baseline's row of results.csv; the others are scored here on the same test
    set, the same way (``aimc.evaluation.score`` with the run's metric over the experiment's test split)."""
    from aimc.evaluation import score

    out: dict[str, float | str] = {}
    base = run.baseline_rows()
    by_label = {str(label): v for label, v in zip(base["model"], run.values(base))}
    for label, stage in run.exp.baselines.items():
        if label in by_label and math.isfinite(by_label[label]):
            out.setdefault(stage, by_label[label])
    loader = None
    for h in histories:
        if h.name in out:
            continue
        if not h.finished:
            out[h.name] = "not trained yet"
            continue
        try:
            if loader is None:
                from aimc.experiment.build import build_splits

                loader = build_splits(run.exp.data, run.exp.seed).loader("test", run.exp.data.eval_batch_size)
            out[h.name] = score(stage_model(run, h.name), loader, run.metric)
        except Exception as err:  # noqa: BLE001 - the report must not fail a finished run; say what went wrong
            log.warning("report: digital accuracy of stage %s could not be measured: %s", h.name, err)
            out[h.name] = f"could not be measured ({type(err).__name__}: {err})"
    return out
