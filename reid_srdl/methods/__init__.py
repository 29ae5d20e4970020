"""Training strategies, one file each, found by name through ``METHODS``."""
from reid_srdl.methods import byot, frskd, kd, one, srdl, vanilla  # noqa: F401  (registration)
from reid_srdl.methods.base import METHODS, Method, StageContext, StageSpec
from reid_srdl.methods.recipe import PLAIN, Recipe


def build_method(section, model_factory, *, total_epochs: int, num_classes: int, seed: int = 0,
                 recipe: Recipe = PLAIN) -> Method:
    """Turn the ``method`` config section into a Method.

    ``section.name`` picks the class; its own sub-section (``section.<name>``, absent for
    vanilla) holds its options.  ``recipe`` (from the ``loss`` section) gives the method its
    ID loss and metric terms.
    """
    cls = METHODS.get(section.name)
    options = getattr(section, section.name, None)
    method = cls.from_config(options, model_factory, total_epochs=total_epochs, num_classes=num_classes, seed=seed)
    method.recipe = recipe
    return method


__all__ = ["METHODS", "Method", "Recipe", "StageContext", "StageSpec", "build_method"]
