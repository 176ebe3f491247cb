"""Build what an experiment file names: the model (zoo or import path, pretrained weights) and the data splits."""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from aimc.errors import ConfigError, FileFormatError
from aimc.experiment.spec import DataSpec, ModelSpec

__all__ = ["build_model", "load_weights", "Splits", "build_splits", "plain_state"]


def _import(target: str):  # noqa: ANN202
    mod, _, fn = target.partition(":")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot import {target!r} ({e}); give package.module:function on the Python path.") from None


def build_model(spec: ModelSpec) -> nn.Module:
    """A fresh model (pretrained weights loaded if the spec names them); ``model.aimc_arch`` (and
    ``aimc_arch_kwargs``) record how it was built."""
    if ":" in spec.name:
        model = _import(spec.name)(**spec.kwargs)
    else:
        from aimc.models import get_model

        model = get_model(spec.name, **spec.kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {spec.name!r} returned {type(model).__name__}, not a torch.nn.Module.")
    if spec.pretrained:
        load_weights(model, spec.pretrained)
    try:  # how aimc.save records the architecture, so aimc.load can rebuild it (kwargs must be JSON)
        json.dumps(spec.kwargs, allow_nan=False)
    except (TypeError, ValueError):
        return model
    model.aimc_arch = spec.name
    if spec.kwargs:
        model.aimc_arch_kwargs = dict(spec.kwargs)
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict from .safetensors, or from a PyTorch checkpoint with ``torch.load(weights_only=True)``.

    A ``state_dict`` key inside the checkpoint and ``module.`` prefixes (DataParallel) are handled; every key of the
    model except ``num_batches_tracked`` must be present.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"pretrained weights {str(path)!r} do not exist; check model.pretrained.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
                sd = sd["state_dict"]
    except Exception as e:  # noqa: BLE001 - torch/safetensors raise many types on bad files
        raise FileFormatError(f"cannot read weights {str(path)!r} ({type(e).__name__}: {e}); a PyTorch checkpoint "
                              "holding anything but tensors is refused (weights_only=True).") from None
    if not isinstance(sd, dict):
        raise FileFormatError(f"{str(path)!r} does not hold a state_dict (found {type(sd).__name__}).")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
             if k in own and torch.is_tensor(v) and v.shape != own[k].shape]
    if wrong:
        raise FileFormatError(f"weights {str(path)!r} do not fit the model: shapes differ for {wrong[:4]}.")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise FileFormatError(f"weights {str(path)!r} do not fit the model: missing {missing[:6]}, unexpected "
                              f"{unexpected[:6]}.")


def plain_state(model: nn.Module, keys: set[str]) -> dict[str, torch.Tensor]:
    """The entries of ``model.state_dict()`` that a plain (unconverted) model has: master weights and BN state."""
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if k in keys}


@dataclass
class Splits:
    """Training, validation, test and calibration sets of one experiment."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    calib: Dataset  # training images without augmentation, in a fixed random order (labels ignored)
    calib_augmented: Dataset  # the same images through the training augmentation

    def calibration(self, n: int, *, augmented: bool, seed: int) -> Dataset:
        """The first ``n`` calibration images as a fixed tensor data set (augmentation drawn once, seeded), so every
        BN re-estimation of a sweep sees exactly the same images."""
        from torch.utils.data import TensorDataset

        ds = self.calib_augmented if augmented else self.calib
        n = min(n, len(ds))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            items = [ds[i] for i in range(n)]
        return TensorDataset(torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items]))

    def loader(self, which: str, batch_size: int, *, seed: int | None = None) -> DataLoader:
        ds = getattr(self, which)
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return DataLoader(ds, batch_size=batch_size, shuffle=seed is not None, generator=g)


def _labels(ds: Dataset) -> np.ndarray:
    if hasattr(ds, "labels"):
        return np.asarray(ds.labels)
    if isinstance(getattr(ds, "tensors", None), tuple):
        return np.asarray(ds.tensors[1])
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


def build_splits(spec: DataSpec, seed: int) -> Splits:
    """Load the data set and cut the validation and calibration subsets (seeded, class-balanced)."""
    from aimc.data import class_balanced_subset, first_per_class, load_dataset

    if ":" in spec.name:
        fn = _import(spec.name)
        train, test = fn("train"), fn("test")
        train_plain = train
    else:
        kw = {} if spec.name == "digits" else {"root": spec.root}
        if spec.name == "cifar10":
            train = load_dataset("cifar10", "train", augment=spec.augment, **kw)
            train_plain = load_dataset("cifar10", "train", augment=False, **kw)
        else:
            train = train_plain = load_dataset(spec.name, "train", **kw)
        test = load_dataset(spec.name, "test", **kw)
    labels = _labels(train_plain)
    idx = np.arange(len(labels))
    if spec.train_limit is not None and spec.train_limit < len(idx):
        idx = np.sort(class_balanced_subset(labels, spec.train_limit, seed=seed))
    val = None
    if spec.validation:
        if spec.validation >= len(idx):
            raise ConfigError(f"data.validation={spec.validation} leaves no training images (have {len(idx)}).")
        v = np.sort(class_balanced_subset(labels[idx], spec.validation, seed=seed + 1))
        val_idx = idx[v]
        idx = np.setdiff1d(idx, val_idx)
        val = Subset(train_plain, val_idx.tolist())
    if spec.test_limit is not None and spec.test_limit < len(test):
        test = Subset(test, sorted(first_per_class(_labels(test), spec.test_limit).tolist()))
    rng = np.random.default_rng(seed + 2)
    calib_idx = rng.permutation(idx)
    return Splits(train=Subset(train, idx.tolist()), val=val, test=test, calib=Subset(train_plain, calib_idx.tolist()),
                  calib_augmented=Subset(train, calib_idx.tolist()))
