"""aimc: analog in-memory computing with phase-change memory for deep learning.

The public API, in one place::

    analog = aimc.convert(model, aimc.presets.joshi2020())     # a converted copy
    aimc.program(analog, seed=0)                               # programming noise, drift exponents
    aimc.at_time(analog, 86_400.0, seed=0)                     # one day later (drift + read noise, GDC)
    res = aimc.evaluate(analog, test_loader, times=[25, 86_400], seeds=range(10), compensation=("none", "gdc"))

Subpackages are reachable as attributes, torchvision-style, and imported on first use (``import aimc`` stays
cheap)::

    model = aimc.models.resnet32_cifar()       # same as: from aimc.models import resnet32_cifar
    train = aimc.data.digits("train")
    report = aimc.cost.estimate(model, "hermes_4phase")
"""

from aimc import devices as devices
from aimc import metrics as metrics
from aimc import presets as presets
from aimc.compensation import recalibrate_bn as recalibrate_bn
from aimc.config import AnalogConfig as AnalogConfig
from aimc.config import CompensationConfig as CompensationConfig
from aimc.config import MappingConfig as MappingConfig
from aimc.config import PeripheryConfig as PeripheryConfig
from aimc.config import TrainingConfig as TrainingConfig
from aimc.errors import AimcError as AimcError
from aimc.errors import ConfigError as ConfigError
from aimc.errors import ClusterError as ClusterError
from aimc.errors import DataError as DataError
from aimc.errors import FileFormatError as FileFormatError
from aimc.errors import NonFiniteError as NonFiniteError
from aimc.errors import ShapeError as ShapeError
from aimc.errors import StateError as StateError
from aimc.errors import UnsupportedLayerError as UnsupportedLayerError
from aimc.evaluation import Results as Results
from aimc.evaluation import evaluate as evaluate
from aimc.inference import at_time as at_time
from aimc.inference import calibrate_input_ranges as calibrate_input_ranges
from aimc.inference import calibrate_output_ranges as calibrate_output_ranges
from aimc.inference import gdc_report as gdc_report
from aimc.inference import program as program
from aimc.io import load as load
from aimc.io import save as save
from aimc.nn.audit import AuditResult as AuditResult
from aimc.nn.audit import audit as audit
from aimc.nn.convert import convert as convert
from aimc.nn.convert import to_digital as to_digital
from aimc.train import clip as clip

__version__ = "0.1.0"

# Subpackages and modules imported on first attribute access (PEP 562), so that `aimc.models.resnet32_cifar()`
# works after a plain `import aimc` without importing the data loaders, the cost model or the CLI up front.
_LAZY_SUBMODULES = frozenset({
    "models", "data", "cost", "experiment", "report", "demo", "cli", "nn", "train", "devices", "presets",
    "config", "errors", "evaluation", "inference", "io", "mapping", "periphery", "compensation", "measured",
})


def __getattr__(name: str):  # noqa: ANN202 - a module, typed by the import system
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"aimc.{name}")  # also binds it on this package for later look-ups
    raise AttributeError(f"module 'aimc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES)

__all__ = [
    "AnalogConfig", "MappingConfig", "PeripheryConfig", "CompensationConfig", "TrainingConfig",
    "presets", "devices", "metrics", "convert", "clip", "program", "at_time", "gdc_report",
    "calibrate_input_ranges", "calibrate_output_ranges", "recalibrate_bn",
    "evaluate", "Results", "save", "load",
    "to_digital", "audit", "AuditResult",
    "AimcError", "ConfigError", "StateError", "ShapeError", "NonFiniteError", "FileFormatError", "DataError", "ClusterError",
    "UnsupportedLayerError", "__version__",
]
