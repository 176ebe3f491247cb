"""A digits CNN whose training forward sleeps a little, so a test can kill a run in the middle of an epoch."""

import time

from torch import nn

from aimc.models import digits_cnn


class _Slow(nn.Module):
    def forward(self, x):
        if self.training:
            time.sleep(0.02)
        return x


def make() -> nn.Module:
    m = digits_cnn()
    return nn.Sequential(_Slow(), *m)
