"""The training recipe's shared terms, one helper that every method calls.

A method computes its own terms (distillation, hints, ensembles); for the terms every re-id
model shares it asks its :class:`Recipe`:

- ``id_loss(logits, labels)``: every hard-label cross-entropy of the method, with label
  smoothing when ``label_smoothing`` > 0 (the plain CE otherwise);
- ``add_metric_terms(out, features, labels)``: the batch-hard triplet loss on the metric
  feature (the network's training-mode ``features``: the embedding, or the pre-BN feature
  with ``model.neck=bnneck``), added to ``out["loss"]`` with its weight and logged as
  ``out["triplet"]`` (unweighted).

The default recipe is plain cross-entropy and no metric term: a method computes exactly what
it did before the recipe existed.  BoT (Luo et al., CVPR-W 2019) is ``label_smoothing=0.1,
triplet_weight=1, triplet_margin=0.3`` with identity-balanced batches (data.sampler=identity).
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Union

import torch

from reid_srdl.methods.losses import batch_hard_triplet, cross_entropy


@dataclass(frozen=True)
class Recipe:
    label_smoothing: float = 0.0
    triplet_weight: float = 0.0
    # Hinge margin; None = soft margin.
    triplet_margin: Optional[float] = 0.3

    @classmethod
    def from_config(cls, section) -> "Recipe":
        """From the ``loss`` config section."""
        return cls(
            label_smoothing=section.label_smoothing,
            triplet_weight=section.triplet_weight,
            triplet_margin=None if section.triplet_soft_margin else section.triplet_margin,
        )

    @property
    def has_metric_terms(self) -> bool:
        return self.triplet_weight > 0

    def id_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels, self.label_smoothing)

    def add_metric_terms(
        self,
        out: Dict[str, torch.Tensor],
        features: Union[torch.Tensor, Sequence[torch.Tensor]],
        labels: torch.Tensor,
    ) -> Dict[str, torch.Tensor]:
        """``out`` with the metric terms added to its loss and logged.

        ``features``: the metric feature [B, D], or a list of them (ONE's branches), whose
        triplet losses are summed as the method sums their cross-entropies.
        """
        if not self.has_metric_terms:
            return out
        if isinstance(features, torch.Tensor):
            features = [features]
        triplet = sum(batch_hard_triplet(f, labels, self.triplet_margin) for f in features)
        out["loss"] = out["loss"] + self.triplet_weight * triplet
        out["triplet"] = triplet
        return out


#: The recipe of a method nobody configured: plain cross-entropy, no metric term.
PLAIN = Recipe()
