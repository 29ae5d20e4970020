"""The Method contract: a method owns what differs between strategies, the trainer the loop.

A method is an ``nn.Module`` so that ``.to(device)``, ``.train()`` and ``.eval()`` reach
everything it holds (including a frozen teacher).  What is optimised and checkpointed is
``method.trainable`` only: a frozen teacher lives beside it, never inside it.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn

from reid_srdl.methods.recipe import PLAIN, Recipe
from reid_srdl.registry import Registry

#: name -> Method subclass; each subclass has ``from_config(section, model_factory, **run)``.
METHODS = Registry("method")

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class StageSpec:
    """One training stage: its epochs; the trainer builds a fresh optimizer at its start."""

    epochs: int


@dataclass
class StageContext:
    """What a stage-end hook may use: where to write, on which device, which data."""

    run_dir: str
    device: torch.device
    data: object  # reid_srdl.data.DataBundle
    progress: bool = True
    channels_last: bool = False


class Method(nn.Module):
    """Base class.  Subclasses implement :meth:`forward` and may override the hooks."""

    #: True: each stage gets its own complete step decay; False: one decay over all epochs.
    per_stage_schedule: bool = True
    #: The shared terms (ID loss with label smoothing, triplet on the metric feature); every
    #: method computes its hard-label CE and metric terms through it.  Set by build_method.
    recipe: Recipe = PLAIN

    def __init__(self, model_factory: ModelFactory, total_epochs: int):
        super().__init__()
        self.model_factory = model_factory
        self.total_epochs = int(total_epochs)
        self.trainable: nn.Module = self.build(model_factory)
        self.epoch = 0

    # ---------------------------------------------------------------- structure
    def build(self, model_factory: ModelFactory) -> nn.Module:
        """The module that is optimised and checkpointed (by default the plain network)."""
        return model_factory()

    def stages(self) -> List[StageSpec]:
        return [StageSpec(self.total_epochs)]

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer at the start of every epoch (global, 0-based)."""
        self.epoch = epoch

    # ---------------------------------------------------------------- training step
    def forward(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Return a dict with ``loss`` (scalar to minimise), ``logits`` (for the train
        accuracy) and every named loss term (logged as is)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- hooks
    def on_stage_end(self, stage: int, ctx: StageContext) -> None:
        """Called after the last epoch of `stage` (0-based), before the checkpoint."""

    def deploy(self) -> nn.Module:
        """The single network used for evaluation, search and export: (logits, features)."""
        return self.trainable

    def extra_eval_models(self, ctx: StageContext) -> Dict[str, nn.Module]:
        """Further networks to evaluate at the end of a run (e.g. SRDL's ensemble)."""
        return {}

    def extra_state(self) -> dict:
        """Whatever beyond the trainable weights must survive a resume."""
        return {}

    def load_extra_state(self, state: dict, run_dir: Optional[str] = None) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no extra state, got keys {sorted(state)}")
