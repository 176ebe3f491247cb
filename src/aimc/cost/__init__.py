"""What it costs: crossbar mapping, energy, latency and device counts of a network on an AIMC chip.

    import aimc.cost
    m = aimc.cost.mapping(model, input_shape=(3, 32, 32), tile=256)   # tiles, devices, MVMs, conversions per layer
    r = aimc.cost.estimate(model, "hermes_4phase")                    # energy / latency per inference vs digital
    r.totals["energy_j"], r.totals["latency_s"], r.to_dict()

Every constant lives in a frozen, sourced parameter set (:mod:`aimc.cost.params`, presets in :mod:`aimc.cost.presets`);
:func:`headline_checks` runs each preset on the workload its published figure refers to. Modules: ``layout`` (the
mapping report), ``trace`` (counting one inference), ``model`` (energy and latency), ``checks``, ``sweep`` (tile size
× ADC bits), ``plots``, ``render`` (``aimc cost``), ``results`` (the docs page).
"""

from aimc.cost.checks import HeadlineCheck as HeadlineCheck
from aimc.cost.checks import headline_checks as headline_checks
from aimc.cost.layout import CostWarning as CostWarning
from aimc.cost.layout import DigitalLayer as DigitalLayer
from aimc.cost.layout import LayerMapping as LayerMapping
from aimc.cost.layout import MappingReport as MappingReport
from aimc.cost.layout import mapping as mapping
from aimc.cost.model import COMPONENTS as COMPONENTS
from aimc.cost.model import CostReport as CostReport
from aimc.cost.model import LayerCost as LayerCost
from aimc.cost.model import estimate as estimate
from aimc.cost.params import DigitalBaseline as DigitalBaseline
from aimc.cost.params import HardwareParams as HardwareParams
from aimc.cost.presets import BASELINES as BASELINES
from aimc.cost.presets import HARDWARE as HARDWARE
from aimc.cost.presets import get_baseline as get_baseline
from aimc.cost.presets import get_hardware as get_hardware
from aimc.cost.training import TrainingEnergy as TrainingEnergy
from aimc.cost.training import training_energy as training_energy

__all__ = ["mapping", "estimate", "training_energy", "TrainingEnergy", "MappingReport", "LayerMapping", "DigitalLayer", "CostReport", "LayerCost",
           "HardwareParams", "DigitalBaseline", "HARDWARE", "BASELINES", "get_hardware", "get_baseline",
           "headline_checks", "HeadlineCheck", "CostWarning", "COMPONENTS"]
