"""The HERMES device next to the Joshi 2020 PCM on the digits CNN: accuracy over time, without and with GDC.

    PYTHONPATH=src python examples/hermes_digits.py            # ~1-2 min on one core

Trains ``digits_cnn`` digitally (seed 0, 10 epochs of Adam), converts the same weights with the presets
``joshi2020``, ``hermes`` (2 devices per polarity) and ``hermes_1dev``, and evaluates 10 programming seeds at
t = 0, 25 s, 1 h, 1 day and 1 year. No hardware-aware training: the differences are the devices' (and the
presets' scale and GDC granularity: one per layer for joshi2020, per column / tile for hermes).
Prints a Markdown table.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch.utils.data import DataLoader

import aimc
from aimc.data import digits
from aimc.models import digits_cnn


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = DataLoader(digits("train"), 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    test = DataLoader(digits("test"), 512)
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(10):
        for x, y in train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test)
        total = sum(len(y) for _, y in test)
    print(f"digital accuracy: {100 * correct / total:.2f} %")
    frames = []
    for name in ("joshi2020", "hermes", "hermes_1dev"):
        analog = aimc.convert(model, aimc.presets.get(name))
        res = aimc.evaluate(analog, test, times=[0, 25, 3600, 86_400, 3.15e7], seeds=range(10),
                            compensation=("none", "gdc"), name=name, progress=False)
        frames.append(res.summary())
    s = pd.concat(frames)
    print("| preset | compensation | 0 s | 25 s | 1 h | 1 day | 1 year |")
    print("|---|---|---|---|---|---|---|")
    for (m, c), g in s.groupby(["model", "compensation"], sort=False):
        cells = [f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}" for _, r in g.sort_values("t_seconds").iterrows()]
        print(f"| {m} | {c} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
