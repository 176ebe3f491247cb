"""Training helpers: hardware-aware training (noise injection lives in the analog layers; clipping here)."""

from aimc.train.hwa import clip as clip

__all__ = ["clip"]
