"""The registries: strict names, and full as soon as the package that owns them is imported."""

import subprocess
import sys

import pytest

from reid_srdl.core.registry import Registry, UnknownNameError


def test_names_are_strict():
    reg = Registry("thing")
    reg.register("x", colour="red")(1)
    assert reg.list() == ["x"] and reg.get("x") == 1 and reg.info("x") == {"colour": "red"}
    with pytest.raises(KeyError, match="thing 'x' is already registered"):
        reg.register("x")(2)
    with pytest.raises(UnknownNameError, match="unknown thing 'y'; valid things: x"):
        reg.get("y")


@pytest.mark.parametrize(
    "module, registry, expected",
    [
        ("reid_srdl.methods.base", "METHODS", ["byot", "frskd", "kd", "one", "srdl", "vanilla"]),
        ("reid_srdl.models.base", "MODELS", ["mobilenet_v2", "resnet50", "small_reid"]),
    ],
)
def test_importing_one_module_of_the_package_fills_its_registry(module, registry, expected):
    # The registry lives beside its entries: importing any module of the package runs the
    # package's __init__, which imports every entry file.
    code = f"from {module} import {registry}\nprint(' '.join({registry}.list()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = out.stdout.split()
    assert all(name in names for name in expected), names
