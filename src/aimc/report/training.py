"""The report's "Training" and "Wall times" sections: loss and validation metric per epoch for every stage, the
digital test accuracy of every trained stage, and how long training, evaluation and the whole run took."""

from __future__ import annotations

import math
import re

from aimc.report.files import Run, Session, StageHistory, results_mtime
from aimc.report.page import e, figure, img, note, pct, seconds, table


def _percent(key: str) -> bool:
    """``val_accuracy`` and ``val_topK`` (the metrics of ``aimc run``) are fractions, shown in %."""
    return re.fullmatch(r"val_(accuracy|top\d+)", key) is not None


def _metric_label(key: str) -> str:
    """``val_accuracy`` -> ``validation accuracy (%)``, ``val_top5`` -> ``validation top-5 accuracy (%)``; other
    ``val_*`` keys keep their name."""
    name = key.removeprefix("val_")
    if _percent(key):
        return f"validation {'accuracy' if name == 'accuracy' else f'top-{name[3:]} accuracy'} (%)"
    return f"validation {name.replace('_', ' ')}"


def _metric_value(key: str, v: float) -> float:
    return 100 * v if _percent(key) else v


def training_section(run: Run, histories: list[StageHistory], digital: dict[str, float | str]) -> str:
    if not histories:
        return note("the experiment has no training stage: the sweeps program the model section's weights.")
    intro = ("<p>Every training stage: the epochs run, its last training loss and validation metric (on the images "
             "held out by <code>data.validation</code>; none without), and the <b>digital test accuracy</b> of its "
             "final weights in floating point, before any programming — the reference each analog model starts "
             "from. Stages named in <code>baselines</code> take that row of results.csv; the others are scored by "
             "the report on the same test set.</p>")
    if run.metric.name != "accuracy":
        intro = intro.replace("digital test accuracy", f"digital test {e(run.metric.label)}")
    rows = []
    for h in histories:
        last = h.records[-1] if h.records else {}
        vals = [f"{_metric_label(k)}: {_metric_value(k, float(last[k])):.2f}" for k in h.val_keys() if k in last]
        acc = digital.get(h.name)
        rows.append((h.name, h.kind, h.init,
                     f"{len(h.records)} / {h.epochs}" + ("" if h.finished else " (unfinished)"),
                     f"{float(last['loss']):.4g}" if "loss" in last else "—", "; ".join(vals) or "—",
                     pct(acc) if isinstance(acc, float) else (acc or "—"),
                     seconds(h.total("seconds") + h.total("checkpoint_seconds")) if h.records else "—"))
    parts = [intro, table(["stage", "kind", "init", "epochs", "last training loss", "last validation metric",
                           f"digital test {run.metric.title}", "training wall time"], rows,
                          [False, False, False, True, True, False, True, True])]
    if any(h.records for h in histories):
        parts.append(img(training_figure(run.exp.name, histories), "training loss and validation metric per epoch"))
    else:
        parts.append(note("no epoch has finished yet: no training curves."))
    return "".join(parts)


def training_figure(name: str, histories: list[StageHistory]):  # noqa: ANN201
    keys = sorted({k for h in histories for k in h.val_keys()})
    fig, axes = figure(10, 3.6, ncols=1 + len(keys))
    for i, h in enumerate(histories):
        if not h.records:
            continue
        ep = [int(r["epoch"]) for r in h.records]
        axes[0].plot(ep, [float(r["loss"]) for r in h.records], marker="o", ms=3, lw=1.5, color=f"C{i}",
                     label=f"{h.name} ({h.kind})")
        for ax, k in zip(axes[1:], keys):
            pts = [(int(r["epoch"]), _metric_value(k, float(r[k]))) for r in h.records if k in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1.5, color=f"C{i}", label=f"{h.name} ({h.kind})")
    losses = [float(r["loss"]) for h in histories for r in h.records if float(r.get("loss", 0)) > 0]
    if losses and max(losses) / min(losses) > 20:  # a log axis only where the loss spans decades
        axes[0].set_yscale("log")
    axes[0].set_ylabel("training loss (epoch mean)")
    axes[0].set_title("training loss", fontsize=10)
    for ax, k in zip(axes[1:], keys):
        ax.set_ylabel(_metric_label(k))
        ax.set_title(_metric_label(k), fontsize=10)
    for ax in axes:
        ax.set_xlabel("epoch of the stage")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name}: training curves per stage", fontsize=10)
    return fig


def times_section(run: Run, histories: list[StageHistory], sessions: list[Session]) -> str:
    intro = ("<p>Training: the sum of the epochs' wall times (training, validation and checkpoint) each stage "
             "recorded. Evaluation and the whole run: from the timestamps of <code>run.log</code>, where every "
             "<code>aimc run</code> of this directory (a resumed run included) starts a session.</p>")
    rows = [(f"stage {h.name} ({h.kind})", f"{len(h.records)} epoch(s), "
             f"{seconds(h.total('seconds') / max(len(h.records), 1))} per epoch",
             seconds(h.total("seconds") + h.total("checkpoint_seconds")))
            for h in histories if h.records]
    brief = 0
    for i, s in enumerate(sessions):
        last = i == len(sessions) - 1
        # the last rows of a run still going (its report is written before its "finished" line) end at results.csv
        end = max(s.last_s, results_mtime(run) or 0.0) if last and s.finished_s is None else s.last_s
        if s.finished_s is None and s.eval_start_s is None and not s.epochs and end - s.start_s < 1.0:
            brief += 1  # stopped at once (e.g. a refused configuration): nothing to time
            continue
        tag = f"session {i + 1} (started {s.started})" if len(sessions) > 1 else f"run (started {s.started})"
        cut = None if last else (f"interrupted: run.log has no later line of it; the next session started "
                                 f"{seconds(sessions[i + 1].start_s - s.start_s)} after it")
        if s.eval_start_s is not None:
            if s.eval_end_s is not None or last:
                stop = s.eval_end_s if s.eval_end_s is not None else end
                rows.append((f"{tag}: evaluation sweeps", "run.log: from its evaluation line to the report"
                             + ("" if s.eval_end_s is not None else " (or the last result)"),
                             seconds(stop - s.eval_start_s)))
            else:
                rows.append((f"{tag}: evaluation sweeps", cut, "—"))
        if s.finished_s is not None:
            rows.append((f"{tag}: whole run", "run.log: finished in", seconds(s.finished_s)))
        elif last:
            rows.append((f"{tag}: whole run", "no end logged yet (interrupted, or still running when this report "
                         "was written): to its last log line or result", seconds(end - s.start_s)))
        elif s.eval_start_s is None:
            rows.append((f"{tag}: whole run", cut + f"; its last line came {seconds(s.last_s - s.start_s)} after "
                         "its start", "—"))
    if not rows:
        return intro + note("run.log has no timestamps and no stage recorded its epochs.")
    total = sum(h.total("seconds") + h.total("checkpoint_seconds") for h in histories)
    extra = "" if not math.isfinite(total) or total <= 0 else (
        f"<p>All training stages together: {e(seconds(total))}.</p>")
    if brief:
        extra += note(f"{brief} more session(s) of run.log stopped within a second of starting (nothing to time).")
    return intro + table(["what", "how measured", "wall time"], rows, [False, False, True]) + extra
