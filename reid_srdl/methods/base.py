"""The Method contract: a method owns what differs between strategies, the trainer the loop.

A method is one file that declares its options (a frozen dataclass whose ``__post_init__``
checks them, naming ``method.<name>.<key>``) and registers itself::

    @dataclass(frozen=True)
    class NameOptions:
        temperature: float = 3.0

    @METHODS.register("name", options=NameOptions)
    class Name(Method):
        def forward(self, images, labels, indices): ...

plus one import line in reid_srdl/methods/__init__.py.  The config section ``method.<name>``
is assembled from the registered options class, and :meth:`Method.from_config` builds the
method (``__init__`` first, then :meth:`build`, so ``build`` sees a complete object).

A method is an ``nn.Module`` so that ``.to(device)``, ``.train()`` and ``.eval()`` reach
everything it holds (including a frozen teacher).  What is optimised and checkpointed is
``method.trainable`` only: a frozen teacher lives beside it, never inside it.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from reid_srdl.core import schema
from reid_srdl.core.registry import Registry
from reid_srdl.methods.recipe import PLAIN, Recipe

ModelFactory = Callable[[], nn.Module]

#: Training methods: ``@METHODS.register("name", options=NameOptions)`` in their own file (full
#: once ``reid_srdl.methods`` is imported: its ``__init__`` imports every method file).
METHODS = Registry("method")


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


@dataclass(frozen=True)
class RunInfo:
    """What a method may need to know about the run it trains in."""

    total_epochs: int
    num_classes: int = 0
    seed: int = 0
    # The shared terms (ID loss with label smoothing, triplet on the metric feature).
    recipe: Recipe = PLAIN


@dataclass(frozen=True)
class NoOptions:
    """The options of a method that has none (vanilla)."""


def options_class(cls: type) -> type:
    """The options dataclass ``cls`` was registered with (NoOptions when none)."""
    for name in METHODS.list():
        if METHODS.get(name) is cls:
            return METHODS.info(name).get("options") or NoOptions
    return NoOptions


class Method(nn.Module):
    """Base class.  Subclasses implement :meth:`forward` and may override the hooks."""

    #: True: each stage gets its own complete step decay; False: one decay over all epochs.
    per_stage_schedule: bool = True

    def __init__(self, options: Any, run: RunInfo):
        """Keep the options and the run; a subclass adds the state it needs from them.  The
        network is built afterwards by :meth:`from_config`, never from here."""
        super().__init__()
        self.options = options
        self.run = run
        self.total_epochs = int(run.total_epochs)
        # Every method computes its hard-label CE and metric terms through the recipe.
        self.recipe: Recipe = run.recipe
        self.epoch = 0
        self.model_factory: Optional[ModelFactory] = None
        self.trainable: Optional[nn.Module] = None

    @classmethod
    def from_config(cls, options: Any, model_factory: ModelFactory, run: RunInfo) -> "Method":
        """The method for ``options`` (its config section) and ``run``, with its trainable
        network built by :meth:`build`."""
        method = cls(options, run)
        method.model_factory = model_factory
        method.trainable = method.build(model_factory)
        return method

    @classmethod
    def create(
        cls,
        model_factory: ModelFactory,
        total_epochs: int,
        *,
        num_classes: int = 0,
        seed: int = 0,
        recipe: Recipe = PLAIN,
        **options,
    ) -> "Method":
        """Direct construction (tests, scripts): options by keyword, the rest at their defaults."""
        run = RunInfo(total_epochs, num_classes, seed, recipe)
        return cls.from_config(options_class(cls)(**options), model_factory, run)

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

    def diagnostics(self, epoch_records: Sequence[dict]) -> Dict[str, object]:
        """Method-specific figures for metrics.json and the result table (e.g. SRDL's stage-1
        bank statistics); ``epoch_records`` are the run's metrics.jsonl lines."""
        return {}

    def extra_state(self) -> dict:
        """Whatever beyond the trainable weights must survive a resume."""
        return {}

    def extra_state_schema(self, epochs_done: int) -> schema.Spec:
        """The schema (:mod:`reid_srdl.core.schema`) of :meth:`extra_state` as saved after
        ``epochs_done`` epochs: a resume checks the saved state against it (naming a missing,
        unknown or out-of-range field) before :meth:`load_extra_state` sees it.  A method that
        keeps state declares it here; by default it keeps none."""
        return schema.Dict()

    def load_extra_state(self, state: dict, run_dir: Optional[str] = None) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no extra state, got keys {sorted(state)}")
