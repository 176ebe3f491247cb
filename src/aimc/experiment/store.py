"""Files of a run that must survive interruption: training checkpoints and the results table.

Both are written atomically (temp file in the same directory, fsync, rename): a crash, SIGKILL or full disk leaves
either the old file or the new one, never half of one. Reading a damaged file raises ``FileFormatError`` naming it,
never a silent restart.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from aimc._files import atomic_write
from aimc.errors import FileFormatError

__all__ = ["atomic_write", "read_csv_rows", "write_csv_rows", "save_checkpoint", "load_checkpoint", "ResultsStore",
           "DamagedResultsError", "salvage_rows", "RESULT_COLUMNS", "result_columns"]

CHECKPOINT_FORMAT = "aimc-checkpoint/1"
RESULT_COLUMNS = ["sweep", "model", "periphery", "compensation", "t_seconds", "seed", "accuracy"]
KEY_COLUMNS = RESULT_COLUMNS[:-1]


def result_columns(value: str = "accuracy") -> list[str]:
    """The columns of results.csv for a run scoring metric ``value`` (the metric's name, e.g. ``"top5"``): the cell's
    key, then one value column named after the metric (``accuracy`` for top-1, as in every run before metrics)."""
    return [*KEY_COLUMNS, value]


def read_csv_rows(path: str | Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """Rows (strings) of a CSV whose header must be exactly ``columns``; ``[]`` when ``path`` does not exist.

    Raises:
        FileFormatError: the header differs (another program's file, or another version's columns).
    """
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != tuple(columns):
            raise FileFormatError(f"{path}: unexpected columns {reader.fieldnames}; expected {list(columns)}. "
                                  "Use another --out directory or remove the file.")
        return [dict(r) for r in reader]


def write_csv_rows(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts with exactly ``columns``) to ``path`` atomically (:func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(columns))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, epoch: int, extra: dict[str, Any] | None = None) -> None:
    """Training state after ``epoch`` (1-based count of finished epochs), as safetensors + JSON metadata."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {f"model/{k}": v.detach().cpu().contiguous()
                                        for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim/{idx}/{name}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = v
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {"format": CHECKPOINT_FORMAT, "epoch": str(epoch), "optim_groups": json.dumps(opt["param_groups"]),
            "optim_scalars": json.dumps(scalars), "scheduler": json.dumps(scheduler.state_dict()),
            "extra": json.dumps(extra or {})}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``{"epoch", "model" (state_dict), "optimizer" (state_dict), "scheduler" (state_dict), "rng", "extra"}``.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
        state: dict[Any, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim/"):
                _, idx, name = k.split("/", 2)
                state.setdefault(int(idx), {})[name] = v
        for idx, d in json.loads(meta["optim_scalars"]).items():
            state.setdefault(int(idx), {}).update(d)
        return {
            "epoch": int(meta["epoch"]),
            "model": {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")},
            "optimizer": {"state": state, "param_groups": json.loads(meta["optim_groups"])},
            "scheduler": json.loads(meta["scheduler"]),
            "rng": tensors["rng/torch"],
            "extra": json.loads(meta.get("extra", "{}")),
        }
    except FileNotFoundError:
        raise FileFormatError(f"checkpoint {str(path)!r} does not exist.") from None
    except Exception as e:  # safetensors header errors, JSON errors, missing keys
        raise FileFormatError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({type(e).__name__}: {e}). It was not used; delete "
            "it to restart that training stage from its previous checkpoint or from scratch.") from None


class DamagedResultsError(FileFormatError):
    """``results.csv`` has damaged rows; ``good`` rows are intact (keep them with ``keep_good_rows=True``)."""

    def __init__(self, msg: str, good: list[dict[str, Any]]):
        super().__init__(msg)
        self.good = good


def salvage_rows(path: str | Path, value: str = "accuracy") -> tuple[list[dict[str, Any]], list[int]]:
    """The intact rows of a results file and the line numbers of the damaged ones.

    A row is intact if it has every column, parseable values (the metric ``value``, a fraction such as accuracy or
    top-5 accuracy, in [0, 1]) and is not the last line of a file
    that does not end with a newline (a file cut in the middle of a number looks valid otherwise). Cells present
    several times are kept once if every copy agrees, else dropped.
    """
    raw = Path(path).read_bytes().decode("utf-8", errors="replace")
    lines = raw.splitlines()
    good: dict[tuple, dict[str, Any]] = {}
    lines_of: dict[tuple, list[int]] = {}
    bad: list[int] = []
    columns = result_columns(value)
    for i, rec in enumerate(csv.reader(lines[1:]), start=2):
        try:
            if len(rec) != len(columns) or (i == len(lines) and not raw.endswith("\n")):
                raise ValueError
            row = dict(zip(columns, rec, strict=True))
            row["t_seconds"], row["seed"], row[value] = (float(row["t_seconds"]), int(row["seed"]),
                                                         float(row[value]))
            if not all(row[c] for c in columns[:4]) or not 0 <= row[value] <= 1 \
                    or not math.isfinite(row["t_seconds"]):
                raise ValueError
        except ValueError:
            bad.append(i)
            continue
        k = ResultsStore.key(row)
        lines_of.setdefault(k, []).append(i)
        if k in good and good[k] != row:
            good[k] = None  # conflicting copies: neither is trusted
        else:
            good.setdefault(k, row)
    for k, row in list(good.items()):
        if row is None:
            bad.extend(lines_of[k])
            del good[k]
    return list(good.values()), sorted(bad)


class ResultsStore:
    """``results.csv`` of a run: one row per finished (sweep, model, periphery, compensation, t, seed) cell.

    Each :meth:`add` rewrites the file atomically, so the file on disk always holds every finished cell exactly once.
    A damaged file (hand-edited, truncated by a full disk or by copying) raises :class:`DamagedResultsError`, never a
    silent restart; ``keep_good_rows=True`` keeps its intact rows (the damaged file is kept beside it as
    ``results.csv.damaged``) so only the other cells are recomputed.

    ``value``: the name of the run's metric (``experiment.metric``), the last column; values are fractions in [0, 1]
    (top-1 or top-K accuracy). A file holding another metric's column is refused, naming both.
    """

    def __init__(self, path: str | Path, *, keep_good_rows: bool = False, value: str = "accuracy"):
        self.path = Path(path)
        self.value = value
        self.columns = result_columns(value)
        self.rows: list[dict[str, Any]] = []
        self._keys: set[tuple] = set()
        if self.path.exists():
            try:
                self._load()
            except DamagedResultsError as e:
                if not keep_good_rows:
                    raise
                self._keep(e.good)

    def _keep(self, good: list[dict[str, Any]]) -> None:
        import logging
        import shutil

        backup = self.path.with_name(self.path.name + ".damaged")
        shutil.copy2(self.path, backup)
        self.rows = [{c: r[c] for c in self.columns} for r in good]
        self._keys = {self.key(r) for r in self.rows}
        atomic_write(self.path, lambda tmp: self.table().to_csv(tmp, index=False))
        logging.getLogger("aimc.run").warning("results file %s was damaged: kept its %d intact row(s); the damaged "
                                              "file is in %s", self.path, len(self.rows), backup)

    def _damaged(self, what: str) -> DamagedResultsError:
        good, bad = salvage_rows(self.path, self.value)
        where = f" (line(s) {', '.join(map(str, bad[:5]))}{' …' if len(bad) > 5 else ''})" if bad else ""
        return DamagedResultsError(
            f"results file {str(self.path)!r} {what}{where}; {len(good)} row(s) are intact. Re-run with "
            f"--keep-good-rows (run_experiment(..., keep_good_rows=True)) to keep those {len(good)} row(s) and "
            f"recompute only the other cells (the damaged file is kept as {self.path.name}.damaged), or move the "
            "file away to recompute every cell.", good)

    def _load(self) -> None:
        try:
            df = pd.read_csv(self.path, dtype={"sweep": str, "model": str, "periphery": str, "compensation": str})
        except Exception as e:  # noqa: BLE001 - pandas raises many types for broken CSV
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header == self.columns:
                raise self._damaged(f"cannot be parsed ({e}); it is corrupt") from None
            raise FileFormatError(f"results file {str(self.path)!r} cannot be parsed ({e}); it is corrupt. Move it "
                                  "away to recompute every cell.") from None
        missing = [c for c in self.columns if c not in df.columns]
        other = [c for c in df.columns if c not in KEY_COLUMNS]
        if missing == [self.value] and len(other) == 1 and not set(KEY_COLUMNS) - set(df.columns):
            raise FileFormatError(f"results file {str(self.path)!r} holds {other[0]!r} results, but this experiment "
                                  f"scores metric {self.value!r}; results of different metrics do not mix. Use "
                                  f"another --out directory, or set `metric: {other[0]}` to resume that run.")
        if missing:
            raise FileFormatError(f"results file {str(self.path)!r} lacks columns {missing}; it was not written by "
                                  "this aimc run. Move it away or use another --out directory.")
        bad = df[self.columns].isna().any(axis=1) | ~df[self.value].between(0, 1)
        if bad.any():
            raise self._damaged(f"has {int(bad.sum())} damaged row(s)")
        if len(df) and not self.path.read_bytes().endswith(b"\n"):
            raise self._damaged("ends in the middle of its last row (truncated)")
        if df.duplicated(KEY_COLUMNS).any():
            raise self._damaged("holds duplicated cells (edited by hand or by another program)")
        self.rows = df.to_dict("records")
        self._keys = {self.key(r) for r in self.rows}

    @staticmethod
    def key(row: dict[str, Any]) -> tuple:
        return (str(row["sweep"]), str(row["model"]), str(row["periphery"]), str(row["compensation"]),
                float(row["t_seconds"]), int(row["seed"]))

    def done(self, row: dict[str, Any]) -> bool:
        return self.key(row) in self._keys

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Add finished cells (skipping any already present) and rewrite the file atomically."""
        new = [r for r in rows if not self.done(r)]
        if not new:
            return
        for r in new:
            self._keys.add(self.key(r))
        self.rows.extend({c: r[c] for c in self.columns} for r in new)
        atomic_write(self.path, lambda tmp: self.table().to_csv(tmp, index=False))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)
