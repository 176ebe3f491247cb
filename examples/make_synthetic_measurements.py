"""Write examples/data/synthetic_pcm_measurements.csv: "measured" conductances sampled from the PCM model itself.

A stand-in for a chip's characterisation data, in the measurement format of ``aimc fit-device``: 4,000 devices in
4 arrays, programmed to 11 target levels and read 10 times from 25 s to one day after programming. The truth is the
reference PCM model (``aimc.devices.PCM()``, reference sheet B.2–B.4), so a fit of this file can be checked against
known parameters (docs/results/device_fit.md).

    python examples/make_synthetic_measurements.py [--out PATH] [--devices N] [--seed S]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from aimc.devices import PCM

# denser at low conductance, where drift and read noise change fastest (0 µS: the idle device of each pair)
LEVELS_US = (0.0, 0.5, 1.0, 1.5, 2.5, 3.5, 5.0, 7.5, 11.0, 17.0, 25.0)
TIMES_S = (25, 60, 150, 400, 1000, 2500, 6000, 15000, 36000, 86400)


def make(n_devices: int = 4000, seed: int = 2024, device: PCM | None = None) -> pd.DataFrame:
    """One row per read: array, device_id, g_target_uS, t_seconds, g_uS (rounded to 0.1 nS)."""
    device = device or PCM()
    gen = torch.Generator().manual_seed(seed)
    g_t = torch.tensor(np.resize(np.array(LEVELS_US), n_devices), dtype=torch.float64)
    state = device.program(g_t, generator=gen)  # programming noise and drift exponents, once per device
    frames = []
    for t in TIMES_S:  # every read: drift with the device's own exponent + fresh 1/f read noise
        g = device.read(state, float(t), generator=gen)
        frames.append(pd.DataFrame({"array": np.arange(n_devices) % 4, "device_id": np.arange(n_devices) // 4,
                                    "g_target_uS": g_t.numpy(), "t_seconds": t, "g_uS": g.numpy().round(4)}))
    return pd.concat(frames, ignore_index=True).sort_values(["array", "device_id", "t_seconds"], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "synthetic_pcm_measurements.csv")
    ap.add_argument("--devices", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=2024)
    a = ap.parse_args()
    torch.set_num_threads(1)
    df = make(a.devices, a.seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out, index=False)
    print(f"wrote {a.out}: {len(df):,} reads of {a.devices:,} devices ({a.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
