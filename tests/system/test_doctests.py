"""The examples in the pure packages' docstrings run, and say what the code does."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

# pure packages whose public functions carry examples; the logged model's servable is loaded by path only
PURE = ("trilho.evaluation", "trilho.monitoring", "trilho.model", "trilho.data")
SKIP = {"trilho.model.servable"}


def _modules() -> list[str]:
    found = []
    for package in PURE:
        module = importlib.import_module(package)
        found += [info.name for info in pkgutil.iter_modules(module.__path__, package + ".") if info.name not in SKIP]
    return sorted(found)


@pytest.mark.parametrize("name", _modules())
def test_the_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs=vars(module).copy()):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail"


def test_the_pure_packages_carry_examples():
    examples = 0
    for name in _modules():
        module = importlib.import_module(name)
        examples += sum(len(t.examples) for t in doctest.DocTestFinder().find(module, name))
    assert examples >= 12, examples
