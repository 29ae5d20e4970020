"""Shared by the search tests: a network whose features are a linear map of an image's mean
colour (so distances between solid-colour images are known), and the solid images themselves."""

import os

import torch
import torch.nn as nn
from PIL import Image

# Four near-primaries and two near-duplicates of them (0 ~ 3, 1 ~ 4).
COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (240, 10, 0), (10, 240, 10)]


class ColourNet(nn.Module):
    """Features = a linear map of the per-channel image means (dim = out_dim)."""

    def __init__(self, out_dim=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(3, out_dim)

    def forward(self, x):
        f = self.proj(x.mean(dim=(2, 3)))
        return f, f


def solid(folder, name, rgb):
    """An 8x16 image of one colour, saved as folder/name; its path."""
    path = os.path.join(folder, name)
    Image.new("RGB", (8, 16), rgb).save(path)
    return path


def colour_images(folder):
    """The :data:`COLOURS` as solid images 0.png ... 4.png in ``folder``."""
    return [solid(folder, f"{i}.png", c) for i, c in enumerate(COLOURS)]
