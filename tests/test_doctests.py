"""Every docstring example (``>>>``) in the library runs and shows what it says.

The modules are found by their source text, so a new example anywhere in reid_srdl/ is
collected with no list to update, and only modules that hold examples are imported: the
optional extras (pymilvus, fastapi, onnx) are never imported just to look for doctests.
"""

import doctest
import importlib
import io
import pathlib

import pytest

import reid_srdl

PACKAGE = pathlib.Path(reid_srdl.__file__).parent


def modules_with_examples():
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = modules_with_examples()


def test_examples_are_found():
    # The search above looks where the examples are: a broken search would run nothing.
    assert {"reid_srdl.api", "reid_srdl.evaluation.open_set"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    mod = importlib.import_module(module)
    tests = [t for t in doctest.DocTestFinder().find(mod, module) if t.examples]
    assert tests, f"{module} has '>>>' in its source but no docstring example doctest can find"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, report.getvalue()
    assert results.attempted == sum(len(t.examples) for t in tests) > 0
