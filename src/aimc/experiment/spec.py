"""What an experiment file says: model, data, training stages, named analog configs, evaluation sweeps.

Every field documents its meaning and unit; ``load_experiment(path)`` reports every problem at once. See
``examples/digits.yaml`` for a commented example.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aimc import presets
from aimc.config import AnalogConfig, TrainingConfig
from aimc.errors import ConfigError, FileFormatError
from aimc.evaluation import COMPENSATIONS
from aimc.experiment.schema import ExperimentConfigError, nonneg, parse, positive, spec, to_plain

__all__ = ["Experiment", "ModelSpec", "DataSpec", "StageSpec", "OptimizerSpec", "ScheduleSpec", "AnalogEntry",
           "SweepSpec", "load_experiment", "load_run_experiment", "experiment_from_dict", "experiment_to_yaml"]


def _int_ge(lo: int):  # noqa: ANN202
    return lambda v: isinstance(v, int) and v >= lo


RUN_METRICS = ("accuracy (top-1) or topK with K ≥ 2, e.g. top5 (aimc run scores class-labelled data; perplexity "
               "and nll of language models: aimc.evaluate(..., metric=...))")


def _run_metric(v: str) -> bool:
    """A metric ``aimc run`` can score: top-1 or top-K accuracy, by its canonical name (the results.csv column).

    Perplexity and NLL are not: the runner's data splits, calibration sets and training are built for class-labelled
    samples (see :mod:`aimc.experiment.build`); language models are scored with ``aimc.evaluate(..., metric=...)``.
    """
    from aimc.metrics import get_metric

    try:
        m = get_metric(v)
    except ConfigError:
        return False
    return m.name == v and m.percent


@dataclass(frozen=True)
class ModelSpec:
    name: str = spec(help="a zoo name (aimc.models.MODEL_NAMES) or package.module:function returning a torch model")
    kwargs: dict = spec(default_factory=dict, help="keyword arguments of the model function")
    pretrained: str | None = spec(None, help="weights to start from: a .safetensors state_dict or a PyTorch "
                                  "checkpoint (.pt/.pth/.th, read with torch.load(weights_only=True))")


@dataclass(frozen=True)
class DataSpec:
    name: str = spec(help="digits, mnist, cifar10, or package.module:function(split) returning a Dataset")
    root: str | None = spec(None, help="data directory (default: $AIMC_DATA or ../shared/data)")
    batch_size: int = spec(128, help="training batch size", unit="images", check=_int_ge(1), allowed="≥ 1")
    eval_batch_size: int = spec(500, help="evaluation batch size", unit="images", check=_int_ge(1), allowed="≥ 1")
    augment: bool = spec(True, help="training augmentation where the data set has one (CIFAR-10: crop + flip)")
    validation: int = spec(0, help="training images held out for validation (choices are made on these, never on "
                           "the test set)", unit="images", check=_int_ge(0), allowed="≥ 0")
    train_limit: int | None = spec(None, help="use a class-balanced subset of the training set", unit="images",
                                   check=_int_ge(10), allowed="≥ 10")
    test_limit: int | None = spec(None, help="use a fixed class-balanced subset of the test set", unit="images",
                                  check=_int_ge(10), allowed="≥ 10")


@dataclass(frozen=True)
class OptimizerSpec:
    name: Literal["sgd", "adam", "adamw"] = spec("sgd", help="torch optimizer")
    lr: float = spec(0.01, help="initial learning rate", unit="per step", check=positive, allowed="> 0")
    momentum: float = spec(0.9, help="SGD momentum", check=lambda v: 0 <= v < 1, allowed="in [0, 1)")
    weight_decay: float = spec(0.0, help="L2 weight decay", check=nonneg, allowed="≥ 0")
    nesterov: bool = spec(False, help="Nesterov momentum (SGD)")


@dataclass(frozen=True)
class ScheduleSpec:
    name: Literal["constant", "cosine", "step"] = spec("cosine", help="learning-rate schedule, stepped per epoch")
    step_size: int = spec(10, help="epochs between decays (step)", unit="epochs", check=_int_ge(1), allowed="≥ 1")
    gamma: float = spec(0.1, help="decay factor (step)", check=positive, allowed="> 0")


@dataclass(frozen=True)
class StageSpec:
    name: str = spec(help="stage name; its weights are referred to by this name")
    kind: Literal["fp", "hwa"] = spec(help="fp: floating-point training; hwa: hardware-aware (noise + clipping)")
    epochs: int = spec(help="passes over the training set", unit="epochs", check=_int_ge(0), allowed="≥ 0")
    init: str = spec("model", help="start from 'model' (the model section, pretrained if given) or a previous stage")
    optimizer: OptimizerSpec = spec(default_factory=OptimizerSpec, help="optimizer")
    schedule: ScheduleSpec = spec(default_factory=ScheduleSpec, help="learning-rate schedule")
    analog: str | None = spec(None, help="hwa: the named analog config whose training noise is used "
                              "(default: the first entry of `analog`)")
    training: dict = spec(default_factory=dict, help="hwa: overrides of the analog config's training section "
                          "(noise, eta, clip, clip_alpha)")


@dataclass(frozen=True)
class AnalogEntry:
    preset: str = spec("joshi2020", help="a preset: " + ", ".join(presets.PRESETS))
    overrides: dict = spec(default_factory=dict, help="nested overrides, e.g. {periphery: {dac_bits: 8}}")

    def resolve(self) -> AnalogConfig:
        base = presets.get(self.preset).to_dict()
        return AnalogConfig.from_dict(_merge(base, self.overrides))


@dataclass(frozen=True)
class SweepSpec:
    name: str = spec(help="sweep name (a column of results.csv)")
    analog: str = spec(help="the named analog config to program (the `periphery` column of results.csv)")
    models: dict = spec(help="results label -> stage name whose weights are programmed, e.g. {hwa: hwa}")
    times: list[float] = spec(help="times after programming", unit="s", check=nonneg, allowed="≥ 0")
    seeds: int | list[int] = spec(10, help="number of seeds (0..n-1) or an explicit list", unit="seeds")
    compensations: list[Literal["none", "gdc", "gdc+bn"]] = spec(
        default_factory=lambda: ["none", "gdc", "gdc+bn"], help="compensations scored on the same conductances")
    n_calib: int = spec(2600, help="unlabeled training images for BN re-estimation (gdc+bn)", unit="images",
                        check=_int_ge(1), allowed="≥ 1")
    calib_augment: bool = spec(True, help="draw the calibration images through the training augmentation, so BN "
                               "statistics are re-estimated on the distribution they were trained on (without it, "
                               "CIFAR-10 ResNet-32 loses 2 pp even with no drift)")
    test_limit: int | None = spec(None, help="evaluate on a fixed class-balanced subset of the test set",
                                  unit="images", check=_int_ge(10), allowed="≥ 10")

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


@dataclass(frozen=True)
class Experiment:
    name: str = spec(help="experiment name")
    model: ModelSpec = spec(help="the network")
    data: DataSpec = spec(help="the data set")
    seed: int = spec(0, help="master seed of training (data order, noise) ", check=_int_ge(0), allowed="≥ 0")
    device: str = spec("cpu", help="torch device for training and evaluation: cpu, cuda or cuda:N",
                       check=lambda v: v == "cpu" or v == "cuda" or (v.startswith("cuda:") and v[5:].isdigit()),
                       allowed="cpu, cuda or cuda:N")
    compile: bool = spec(False, help="evaluate through torch.compile (same accuracies up to float rounding; "
                         "compiling costs tens of seconds per process and pays on long sweeps, see "
                         "benchmarks/bench_fast.py)")
    channels_last: bool = spec(False, help="evaluate images in channels-last memory format (same accuracies up to "
                               "float rounding; 10-15 % faster for ResNets on CPU, see benchmarks/bench_fast.py)")
    training: list[StageSpec] = spec(default_factory=list, help="training stages, run in order")
    analog: dict = spec(default_factory=lambda: {"joshi2020": {"preset": "joshi2020"}},
                        help="named analog configs: name -> {preset, overrides}")
    baselines: dict = spec(default_factory=dict, help="results label -> stage (or 'model') evaluated digitally")
    metric: str = spec("accuracy", help="what the baselines, the sweeps and the validation during training score; "
                       "it names the value column of results.csv (perplexity and nll of language models: use "
                       "aimc.evaluate(..., metric=...), the runner trains and splits class-labelled data)",
                       check=_run_metric, allowed=RUN_METRICS)
    evaluation: list[SweepSpec] = spec(default_factory=list, help="evaluation sweeps")

    def scorer(self):  # noqa: ANN201 - an aimc.metrics.Metric
        """The :class:`aimc.metrics.Metric` of ``metric`` (its name is the value column of results.csv)."""
        from aimc.metrics import get_metric

        return get_metric(self.metric)

    def analog_entries(self) -> dict[str, AnalogEntry]:
        return {k: parse(AnalogEntry, v, f"analog.{k}") for k, v in self.analog.items()}

    def analog_config(self, name: str) -> AnalogConfig:
        return self.analog_entries()[name].resolve()

    def stage_config(self, stage: StageSpec) -> AnalogConfig:
        """The analog config of an HWA stage, with its training overrides applied."""
        import dataclasses

        cfg = self.analog_config(stage.analog or next(iter(self.analog)))
        tr = TrainingConfig(**{**to_plain(cfg.training), **stage.training})
        return dataclasses.replace(cfg, training=tr)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _check_zoo_kwargs(name: str, kwargs: dict, problems: list[tuple[str, str]]) -> None:
    """Keyword names of a zoo model, checked against its builder's signature (a misspelt `hidde:` is caught here,
    not after the run has started); the values are the builder's business."""
    import inspect

    from aimc import models

    builder = getattr(models, "_REGISTRY", {}).get(name)
    try:
        params = inspect.signature(builder).parameters if builder is not None else None
    except (TypeError, ValueError):
        params = None
    if params is None or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append((f"model.kwargs.{key}", f"{name} takes no argument {key!r} ({hint}its arguments: "
                             f"{', '.join(allowed) or 'none'})"))


def _cross_checks(exp: Experiment, problems: list[tuple[str, str]]) -> None:
    """Checks that span sections: references between stages, sweeps and analog configs.

    ``exp`` may be partly invalid (a field that failed its own check is ``None``, a stage or sweep that could not be
    built is ``None``): those problems are already listed, so only what parsed is checked here, and references to a
    section that did not parse are not reported twice.
    """
    from aimc.data import DATASETS
    from aimc.models import MODEL_NAMES

    model, data = exp.model, exp.data
    if model is not None and isinstance(model.name, str) and ":" not in model.name and model.name not in MODEL_NAMES:
        problems.append(("model.name", f"unknown model {model.name!r}; known: {', '.join(MODEL_NAMES)} "
                         "(or package.module:function)"))
    elif model is not None and isinstance(model.kwargs, dict) and model.kwargs and model.name in MODEL_NAMES:
        _check_zoo_kwargs(model.name, model.kwargs, problems)
    if data is not None and isinstance(data.name, str) and ":" not in data.name and data.name not in DATASETS:
        problems.append(("data.name", f"unknown data set {data.name!r}; known: {', '.join(DATASETS)} "
                         "(or package.module:function)"))
    analog = exp.analog if isinstance(exp.analog, dict) else None  # None: already reported, skip references
    analog_ok = analog is not None
    for name, entry in (analog or {}).items():
        try:
            a = parse(AnalogEntry, entry, f"analog.{name}")
            a.resolve()
        except ExperimentConfigError as e:
            problems.extend(e.problems)
            analog_ok = False
        except (ConfigError, TypeError, ValueError) as e:
            problems.append((f"analog.{name}", str(e)))
            analog_ok = False
    stages = exp.training if isinstance(exp.training, list) else []
    # references to stages are checked only when every stage parsed with a name (else: already reported)
    stages_ok = isinstance(exp.training, list) and all(st is not None and isinstance(st.name, str) for st in stages)
    stage_names: list[str] = []
    for i, st in enumerate(stages):
        if st is None:
            continue
        p = f"training[{i}]"
        if st.name in stage_names or st.name == "model":
            problems.append((f"{p}.name", f"{st.name!r} is used twice (or is the reserved name 'model')"))
        if stages_ok and isinstance(st.init, str) and st.init != "model" and st.init not in stage_names:
            problems.append((f"{p}.init",
                             f"{st.init!r} is not 'model' or an earlier stage of `training` ({stage_names})"))
        if analog is not None and isinstance(st.analog, str) and st.analog not in analog:
            problems.append((f"{p}.analog", f"{st.analog!r} is not a config named in `analog` ({list(analog)})"))
        if st.kind == "hwa":
            if analog is not None and not analog:
                problems.append((f"{p}.analog", "an hwa stage needs a named analog config in `analog`"))
            elif analog_ok and isinstance(st.training, dict) and (st.analog is None or st.analog in analog):
                try:
                    exp.stage_config(st)
                except (ConfigError, TypeError, ValueError) as e:
                    problems.append((f"{p}.training", str(e)))
        elif st.kind == "fp" and st.training:
            problems.append((f"{p}.training", "only hwa stages take training-noise overrides"))
        if isinstance(st.name, str):
            stage_names.append(st.name)
    known = ["model", *stage_names]
    for label, stage in (exp.baselines if isinstance(exp.baselines, dict) and stages_ok else {}).items():
        if stage not in known:
            problems.append((f"baselines.{label}",
                             f"{stage!r} is not 'model' or a stage of `training` ({stage_names})"))
    seen = set()
    for i, sw in enumerate(exp.evaluation if isinstance(exp.evaluation, list) else []):
        if sw is None:
            continue
        p = f"evaluation[{i}]"
        if isinstance(sw.name, str):
            if sw.name in seen:
                problems.append((f"{p}.name", f"{sw.name!r} is used twice"))
            seen.add(sw.name)
        if analog is not None and isinstance(sw.analog, str) and sw.analog not in analog:
            problems.append((f"{p}.analog", f"{sw.analog!r} is not a config named in `analog` ({list(analog)})"))
        if isinstance(sw.models, dict):
            if not sw.models:
                problems.append((f"{p}.models", "empty: name at least one model, e.g. {hwa: hwa}"))
            for label, stage in sw.models.items() if stages_ok else ():
                if stage not in known:
                    problems.append((f"{p}.models.{label}",
                                     f"{stage!r} is not 'model' or a stage of `training` ({stage_names})"))
        if sw.times == []:
            problems.append((f"{p}.times", "empty: give times after programming in seconds, e.g. [25, 3600]"))
        if sw.seeds is not None:
            seeds = sw.seed_list()
            if not seeds or any((not isinstance(s, int)) or s < 0 for s in seeds):
                problems.append((f"{p}.seeds",
                                 f"{sw.seeds!r} is not allowed: a count ≥ 1 or a list of integers ≥ 0"))
        if sw.compensations == []:
            problems.append((f"{p}.compensations", f"empty: choose from {list(COMPENSATIONS)}"))


def experiment_from_dict(data: Any, source: str = "experiment") -> Experiment:
    """Validate and build an :class:`Experiment`; every problem is reported at once."""
    problems: list[tuple[str, str]] = []
    exp = parse(Experiment, data, "", problems)
    if exp is not None:
        _cross_checks(exp, problems)
    if problems:
        raise ExperimentConfigError(problems, source)
    return exp


def load_experiment(path: str | Path) -> Experiment:
    """Read a YAML (or TOML, by extension) experiment file."""
    path = Path(path)
    if path.is_dir():
        raise FileFormatError(f"{str(path)!r} is a directory; give an experiment file (YAML or TOML), e.g. "
                              "examples/digits.yaml.")
    if not path.is_file():
        raise FileFormatError(f"experiment file {str(path)!r} does not exist; check the path "
                              "(examples live in examples/).")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise FileFormatError(f"cannot read experiment file {str(path)!r}: {e}") from None
    if path.suffix == ".toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise FileFormatError(f"{path}: TOML syntax error: {e}") from None
    else:
        import yaml

        try:  # libyaml's loader when PyYAML has it (same results, 10x faster), else the pure-Python one
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise FileFormatError(f"{path}: YAML syntax error{where}: {getattr(e, 'problem', e)}") from None
    return experiment_from_dict(data, str(path))


def load_run_experiment(run_dir: str | Path) -> Experiment:
    """The resolved experiment of a run directory (its ``config.yaml``), with clear errors for anything else."""
    import yaml

    run_dir = Path(run_dir)
    cfg = run_dir / "config.yaml"
    if not cfg.is_file():
        raise FileFormatError(f"{str(run_dir)!r} is not a run directory (no config.yaml); give the --out directory "
                              "of an `aimc run`.")
    try:
        data = yaml.safe_load(cfg.read_text())
    except yaml.YAMLError as e:
        raise FileFormatError(f"{cfg}: YAML syntax error: {e}") from None
    return experiment_from_dict(data, str(cfg))


def experiment_to_yaml(exp: Experiment) -> str:
    """The resolved experiment (all defaults filled in) as YAML; ``experiment_from_dict`` reads it back."""
    import yaml

    return yaml.safe_dump(to_plain(exp), sort_keys=False)
