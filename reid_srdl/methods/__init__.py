"""Training strategies, one file each, found by name through ``METHODS``.

A new method is its file plus one name in the import line below (docs/extending.md).
"""

from reid_srdl.methods import byot, frskd, kd, one, srdl, vanilla  # noqa: F401  (registration)
from reid_srdl.methods.base import METHODS, Method, NoOptions, RunInfo, StageContext, StageSpec
from reid_srdl.methods.recipe import PLAIN, Recipe


def build_method(
    section, model_factory, *, total_epochs: int, num_classes: int, seed: int = 0, recipe: Recipe = PLAIN
) -> Method:
    """Turn the ``method`` config section into a Method: ``section.name`` picks the class,
    ``section.<name>`` (its registered options) configures it; ``recipe`` (from the ``loss``
    section) gives it its ID loss and metric terms."""
    cls = METHODS.get(section.name)
    options = section.options_of(section.name)
    return cls.from_config(options, model_factory, RunInfo(total_epochs, num_classes, seed, recipe))


__all__ = ["METHODS", "Method", "NoOptions", "Recipe", "RunInfo", "StageContext", "StageSpec", "build_method"]
