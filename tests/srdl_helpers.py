"""Shared by the SRDL tests (test_methods, test_srdl_fidelity): a 12-image indexed set of
3 classes, its ResNet-8 factory and the stage context a stage-end hook receives."""

from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Dataset

from reid_srdl.methods.base import StageContext
from reid_srdl.models import build_model

NUM_CLASSES = 3


class TinyIndexed(Dataset):
    """12 random 1x28x28 images with labels, yielding (image, label, index)."""

    def __init__(self, n=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 1, 28, 28, generator=g)
        self.y = torch.arange(n) % NUM_CLASSES

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), i


def factory():
    return build_model("resnet8", NUM_CLASSES, in_channels=1)


def _ctx(tmp_path, data, batch_size=5):
    # Shuffled order on purpose: the bank must be filled by index, not by position.
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(3))
    bundle = SimpleNamespace(train_eval_loader=loader, num_train=len(data))
    return StageContext(str(tmp_path), torch.device("cpu"), bundle, progress=False)
