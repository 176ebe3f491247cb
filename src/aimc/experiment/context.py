"""What the stages and sweeps of a run share: the experiment, the run directory, the data and the weights of each
stage. Used by the runner, the report and the CLI (one place, no import cycle between them)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from aimc.errors import FileFormatError
from aimc.experiment.build import Splits, build_model, build_splits
from aimc.experiment.distributed import Dist
from aimc.experiment.spec import Experiment
from aimc.nn.tile import derive_seed

__all__ = ["RunContext"]


class RunContext:
    """What the stages and sweeps share: the experiment, the run directory, the data."""

    def __init__(self, exp: Experiment, out: Path, dist: Dist | None = None):
        self.exp, self.out = exp, out
        self.dist = dist  # None in a single process; else this rank of a DDP training group
        self.device = dist.device if dist is not None else torch.device(exp.device)
        self._splits: Splits | None = None
        self._keys: set[str] | None = None

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = build_splits(self.exp.data, self.exp.seed)
        return self._splits

    def fresh_model(self) -> nn.Module:
        """The model section's network; its random initialisation is seeded by the experiment seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.exp.seed, "init") % 2**63)
            return build_model(self.exp.model)

    @property
    def plain_keys(self) -> set[str]:
        if self._keys is None:
            self._keys = set(self.fresh_model().state_dict())
        return self._keys

    def test_set(self, limit: int | None) -> Dataset:
        """The test images a sweep evaluates on: all of them, or a fixed class-balanced subset of ``limit`` (the first
        images of each class in file order; the same for every cell, seed and process)."""
        test = self.splits.test
        if limit is None or limit >= len(test):
            return test
        cache = self.__dict__.setdefault("_test_subsets", {})
        if limit not in cache:
            from aimc.data import first_per_class
            from aimc.experiment.build import _labels

            cache[limit] = Subset(test, first_per_class(_labels(test), limit).tolist())
        return cache[limit]

    def calibration_loader(self, sweep) -> DataLoader:  # noqa: ANN001
        """BN re-estimation images of a sweep: fixed, seeded, cached per process."""
        key = (sweep.n_calib, sweep.calib_augment)
        cache = self.__dict__.setdefault("_calib", {})
        if key not in cache:
            cache[key] = self.splits.calibration(sweep.n_calib, augmented=sweep.calib_augment,
                                                 seed=derive_seed(self.exp.seed, "calib") % 2**63)
        return DataLoader(cache[key], batch_size=self.exp.data.eval_batch_size)

    def stage_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.safetensors"

    def weights(self, stage: str) -> nn.Module:
        """A plain model holding the final weights of ``stage`` (or of the model section for 'model')."""
        model = self.fresh_model()
        if stage != "model":
            from safetensors.torch import load_file

            path = self.stage_path(stage)
            try:
                sd = load_file(str(path))
            except Exception as e:  # noqa: BLE001
                raise FileFormatError(f"stage weights {str(path)!r} are missing or corrupt ({e}); delete the file "
                                      "to retrain that stage.") from None
            model.load_state_dict(sd, strict=False)
        return model.to(self.device)
