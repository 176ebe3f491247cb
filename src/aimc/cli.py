"""The ``aimc`` command."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="aimc: analog in-memory computing with phase-change memory for deep learning.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _main() -> None:
    """aimc: analog in-memory computing with phase-change memory for deep learning."""


@app.command()
def demo(out: Path = typer.Option(Path("aimc-demo"), help="output directory"),
         quick: bool = typer.Option(False, help="a tiny budget (seconds), for tests"),
         seeds: int = typer.Option(None, min=1, help="number of programming seeds (default 10; 2 with --quick)"),
         quiet: bool = typer.Option(False, help="no progress bars")) -> None:
    """Train a digits CNN (FP and hardware-aware), program it onto PCM, evaluate from 25 s to 1 year."""
    from dataclasses import replace

    from rich.console import Console
    from rich.table import Table

    from aimc.demo import DemoSettings, run_demo
    from aimc.evaluation import format_time

    console = Console()
    s = DemoSettings.quick() if quick else DemoSettings()
    if seeds is not None:
        s = replace(s, seeds=seeds)
    summ = run_demo(out, s, progress=not quiet, log=console.print)
    table = Table(title="accuracy (%) after programming: mean ± std [95 % CI]")
    for col in ("model", "compensation", "t", "mean", "std", "95 % CI", "n"):
        table.add_column(col, justify="right" if col not in ("model", "compensation") else "left")
    for _, r in summ.iterrows():
        ci = "—" if r["n"] < 2 else f"{100 * r['ci95_low']:.2f}–{100 * r['ci95_high']:.2f}"
        table.add_row(r["model"], r["compensation"], format_time(r["t_seconds"]) if r["t_seconds"] else "—",
                      f"{100 * r['mean']:.2f}", f"{100 * r['std']:.2f}", ci, str(int(r["n"])))
    console.print(table)


@app.command()
def version() -> None:
    """Print the aimc and torch versions."""
    import torch

    import aimc

    typer.echo(f"aimc {aimc.__version__} (torch {torch.__version__})")


if __name__ == "__main__":
    app()
