"""Write docs/results/joshi2020_cifar10.{md,csv,png} and models/resnet32_cifar10_{fp,hwa}.safetensors from a run of
examples/cifar10_resnet32.yaml.

    python examples/joshi2020_results.py runs/cifar10_resnet32 [--docs docs/results] [--models models]

Paper numbers (Joshi et al., Nat. Commun. 11, 2473, 2020; reference sheet section A) are quoted with their tags.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pandas as pd

import aimc
from aimc.evaluation import format_time, plot_summary, summarize
from aimc.experiment.runner import _Context
from aimc.experiment.spec import load_run_experiment

PAPER_BASELINE = 93.87  # [S] FP32 software baseline of the paper's ResNet-32
DAY, YEAR = 86400.0, 31536000.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_models(run: Path, exp, models_dir: Path) -> dict[str, str]:
    """B (converted with joshi2020, unprogrammed) and H as aimc.save files; returns {file: sha256}."""
    ctx = _Context(exp, run)
    cfg = aimc.presets.joshi2020()
    out = {}
    for stage, name in (("fp", "resnet32_cifar10_fp.safetensors"), ("hwa", "resnet32_cifar10_hwa.safetensors")):
        if not ctx.stage_path(stage).exists():
            continue
        model = aimc.convert(ctx.weights(stage), cfg)
        aimc.save(model, models_dir / name, arch="resnet32_cifar")
        out[name] = _sha256(models_dir / name)
    return out


def results_table(run: Path) -> pd.DataFrame:
    """The issue's CSV: model (fp_digital / fp_direct / hwa), periphery, compensation, t_seconds, seed, accuracy."""
    t = pd.read_csv(run / "results.csv")
    base = t[(t["sweep"] == "baseline") & (t["model"] == "fp_digital")].assign(periphery="digital")
    swept = t[t["sweep"] != "baseline"]
    out = pd.concat([base, swept], ignore_index=True)
    return out[["model", "periphery", "compensation", "t_seconds", "seed", "accuracy"]]


def _mean(s: pd.DataFrame, model: str, comp: str, t: float, periphery: str = "joshi2020") -> tuple[float, float, int]:
    g = s[(s["model"] == model) & (s["compensation"] == comp) & (s["t_seconds"] == t)
          & (s["periphery"] == periphery)]
    if not len(g):
        return float("nan"), float("nan"), 0
    r = g.iloc[0]
    return 100 * r["mean"], 100 * (r["ci95_high"] - r["mean"]), int(r["n"])


def page(run: Path, table: pd.DataFrame, shas: dict[str, str], docs: Path) -> str:
    s = summarize(table, ("model", "periphery", "compensation", "t_seconds"))
    b_row = table[table["model"] == "fp_digital"]
    b = 100 * float(b_row["accuracy"].iloc[0]) if len(b_row) else float("nan")
    base = pd.read_csv(run / "results.csv")
    pre = base[(base["sweep"] == "baseline") & (base["model"] == "pretrained_digital")]
    pre_acc = 100 * float(pre["accuracy"].iloc[0]) if len(pre) else float("nan")

    def row(label, model, comp, t, paper_abs, paper_drop, target=""):
        m, ci, n = _mean(s, model, comp, t)
        ours = "not yet run" if n == 0 else f"{m:.2f} ± {ci:.2f} (n={n})"
        drop = "" if n == 0 else f"{b - m:.2f}"
        return f"| {label} | {ours} | {drop} | {paper_abs} | {paper_drop} | {target} |"

    lines = [
        "# Joshi et al. 2020 on this repository's CIFAR-10 copy: ResNet-32 on PCM, 25 s to a year", "",
        "Command (resumable; re-run the same command after an interruption):", "",
        "```bash", "aimc run examples/cifar10_resnet32.yaml --out runs/cifar10_resnet32 --threads 1",
        f"python examples/joshi2020_results.py {run}", "```", "",
        "The CIFAR-10 arrays in `../shared/data` are decoded from JPEG (median RMSE 7.6 grey levels), so the "
        "pretrained ResNet-32 (92.63 % on lossless CIFAR-10) scores "
        f"**{pre_acc:.2f} %** on this test copy. Every comparison below is therefore a *drop from our own "
        f"baseline B* (the pretrained network after a short floating-point fine-tune on the JPEG training copy: "
        f"**{b:.2f} %**), set next to the paper's drop from its own baseline ({PAPER_BASELINE} %).", "",
        "Accuracy: mean over programming seeds ± half-width of the 95 % confidence interval (Student t). "
        "Drop: B minus ours (positive = worse than B).", "",
        "| condition | ours (%) | our drop from B (pp) | paper (%) | paper's drop (pp) | target |",
        "|---|---|---|---|---|---|",
        f"| B, floating point | {b:.2f} | 0 | 93.87 [S] | 0 | |",
        row("H at 25 s, no compensation", "hwa", "none", 25.0, "93.75 first read-out [S]", "0.12", "within 0.5"),
        row("H at 25 s, GDC", "hwa", "gdc", 25.0, "", "", ""),
        row("H at 1 day, GDC", "hwa", "gdc", DAY, "> 92.6 [P]", "< 1.27", "within 1.5"),
        row("H at 1 day, GDC + BN re-estimation", "hwa", "gdc+bn", DAY, "> 93.5 [P]", "< 0.37", "within 0.6"),
        row("H at 1 year, GDC", "hwa", "gdc", YEAR, "", "", ""),
        row("H at 1 year, GDC + BN", "hwa", "gdc+bn", YEAR, "≈ GDC + 1.8 [S]", "", "better than GDC"),
        row("H at 1 h, no compensation", "hwa", "none", 3600.0, "→ ~10 within ~10³ s [S]", "", ""),
        row("FP direct at 1 day, GDC", "fp_direct", "gdc", DAY, "", "", "clearly worse than H"),
        row("FP direct at 1 day, GDC + BN", "fp_direct", "gdc+bn", DAY, "", "", ""),
        "",
    ]
    # the plot
    for per in ("joshi2020", "aihwkit_default"):
        ss = s[(s["periphery"] == per) & (s["model"] != "fp_digital")].drop(columns=["periphery"])
        if len(ss):
            plot_summary(ss, docs / f"joshi2020_cifar10_{per}.png",
                         title=f"ResNet-32 / CIFAR-10 (JPEG copy) on PCM, periphery {per}")
            lines += [f"![accuracy vs time, {per}](joshi2020_cifar10_{per}.png)", ""]
    lines += ["## All results (mean ± 95 % CI over seeds)", "",
              "| model | periphery | compensation | t | mean (%) | std (%) | 95 % CI (%) | n |",
              "|---|---|---|---|---|---|---|---|"]
    for _, r in s.iterrows():
        ci = "—" if r["n"] < 2 else f"{100 * r['ci95_low']:.2f} – {100 * r['ci95_high']:.2f}"
        lines.append(f"| {r['model']} | {r['periphery']} | {r['compensation']} | {format_time(r['t_seconds'])} | "
                     f"{100 * r['mean']:.2f} | {100 * r['std']:.2f} | {ci} | {int(r['n'])} |")
    lines += ["", "Raw results: `joshi2020_cifar10.csv` (columns model, periphery, compensation, t_seconds, seed, "
              "accuracy).", "", "## Trained networks", ""]
    for name, sha in shas.items():
        lines.append(f"- `models/{name}`: sha256 `{sha}` — `aimc.load('models/{name}')` gives a converted model "
                     "(joshi2020 config) ready for `aimc.evaluate`.")
    hist = []
    for stage in ("fp", "hwa"):
        ck = run / "checkpoints" / stage / "last.safetensors"
        if ck.exists():
            from aimc.experiment.store import load_checkpoint

            h = load_checkpoint(ck)["extra"].get("history", [])
            vals = ", ".join(f"{100 * e.get('val_accuracy', float('nan')):.2f}" for e in h)
            minutes = sum(e["seconds"] for e in h) / 60
            hist.append(f"- stage `{stage}`: {len(h)} epochs, {minutes:.1f} min, validation accuracy after each "
                        f"epoch {vals} %")
    lines += ["", "## Wall times (this 2-core machine, one torch thread)", "", *hist, ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run", type=Path)
    ap.add_argument("--docs", type=Path, default=Path("docs/results"))
    ap.add_argument("--models", type=Path, default=Path("models"))
    args = ap.parse_args()
    exp = load_run_experiment(args.run)
    args.docs.mkdir(parents=True, exist_ok=True)
    args.models.mkdir(parents=True, exist_ok=True)
    table = results_table(args.run)
    table.to_csv(args.docs / "joshi2020_cifar10.csv", index=False)
    shas = export_models(args.run, exp, args.models)
    (args.docs / "joshi2020_cifar10.md").write_text(page(args.run, table, shas, args.docs))
    print(json.dumps({"rows": len(table), "models": shas}, indent=1))


if __name__ == "__main__":
    main()
