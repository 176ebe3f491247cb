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


def _fail(e: BaseException, debug: bool) -> None:
    """One paragraph on stderr and exit code 2 (the traceback only with --debug)."""
    if debug:
        raise e
    import textwrap

    msg = str(e) if str(e) else type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, AimcErrorT):
        msg = f"{e.strerror or e} ({e.filename or ''}); nothing half-written was left behind."
    typer.echo(textwrap.indent(f"error: {msg}", ""), err=True)
    raise typer.Exit(2)


from aimc.errors import AimcError as AimcErrorT  # noqa: E402


@app.command()
def run(experiment: Path = typer.Argument(..., help="experiment file (YAML or TOML)"),
        out: Path = typer.Option(None, help="run directory (default: runs/<experiment name>)"),
        force: bool = typer.Option(False, help="start over if --out holds a different experiment"),
        workers: int = typer.Option(1, help="processes for independent evaluation cells"),
        threads: int = typer.Option(None, min=1, help="torch threads (1 is fastest for small models)"),
        quiet: bool = typer.Option(False, help="no progress bars"),
        debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """Run (or resume) an experiment: training stages, digital baselines, evaluation sweeps, summary, report."""
    from aimc.experiment.runner import run_experiment
    from aimc.experiment.spec import load_experiment

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        exp = load_experiment(experiment)
        path = run_experiment(exp, out or Path("runs") / exp.name, force=force, quiet=quiet, workers=workers)
    except (AimcErrorT, OSError, FloatingPointError) as e:
        _fail(e, debug)
        return
    if not quiet:
        typer.echo((path / "summary.md").read_text())
    typer.echo(f"results in {path}")


@app.command()
def validate(experiment: Path = typer.Argument(..., help="experiment file (YAML or TOML)"),
             debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """Check an experiment file without running it; lists every problem with its path, value and what is allowed."""
    from aimc.experiment.spec import load_experiment

    try:
        exp = load_experiment(experiment)
    except (AimcErrorT, OSError) as e:
        _fail(e, debug)
        return
    n_cells = sum(len(s.models) * len(s.seed_list()) * len(s.times) * len(s.compensations) for s in exp.evaluation)
    typer.echo(f"{experiment}: valid. {len(exp.training)} training stage(s), {len(exp.evaluation)} sweep(s), "
               f"{n_cells} evaluation cell(s).")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory written by `aimc run`"),
           debug: bool = typer.Option(False, help="show tracebacks")) -> None:
    """(Re)write summary.md and the self-contained report.html of a run directory."""
    from aimc.experiment.summary import rewrite

    try:
        paths = rewrite(run_dir)
    except (AimcErrorT, OSError) as e:
        _fail(e, debug)
        return
    for p in paths:
        typer.echo(f"wrote {p}")


@app.command()
def version() -> None:
    """Print the aimc and torch versions."""
    import torch

    import aimc

    typer.echo(f"aimc {aimc.__version__} (torch {torch.__version__})")


if __name__ == "__main__":
    app()
