"""The package's public names: what `import trilho` gives, and a complete tree of its errors."""

from __future__ import annotations

import inspect

import trilho
from trilho import errors

PUBLIC = {
    "ClusterError", "ConfigError", "DataValidationError", "EvaluationError", "Experiment", "NotebookError", "RequestError", "Settings",
    "SourceError", "SourceUnreachableError", "StorageError", "TrackingError", "TrilhoError", "__version__",
    "load_experiment", "load_settings",
    # the workflow's entry points (the notebook's and README's), loaded on first use
    "compare", "init_experiment", "load_clean", "monitor_model", "open_lake", "predict_batch", "run_experiment", "tune",
}


def test_the_package_exports_exactly_its_public_names():
    assert set(trilho.__all__) == PUBLIC
    assert all(hasattr(trilho, name) for name in trilho.__all__)


def test_every_error_is_in_the_tree_exported_and_documented():
    defined = {name for name, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, errors.TrilhoError) and obj.__module__ == errors.__name__}
    assert defined == set(errors.__all__)
    for name in defined:
        assert getattr(trilho, name) is getattr(errors, name), name
        assert name in (errors.__doc__ or ""), f"{name} is missing from the tree in errors' docstring"
    # no module defines an error of its own outside errors.py (a signal to stop, a KeyboardInterrupt, is no error)
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(trilho.__path__, "trilho."):
        if info.name in {"trilho.model.servable", "trilho.__main__"}:  # the logged model's own code stands alone
            continue
        module = importlib.import_module(info.name)
        own = [n for n, obj in inspect.getmembers(module, inspect.isclass)
               if issubclass(obj, Exception) and obj.__module__ == module.__name__ and module is not errors]
        assert not own, f"{info.name} defines {own}: trilho's errors live in trilho.errors"


def _defined_at_top(tree) -> set[str]:
    import ast

    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def test_each_module_exports_only_the_names_it_defines():
    """A module's ``__all__`` lists its own names; a name is imported from where it is defined
    (packages' ``__init__`` files are the facades that gather names)."""
    import ast
    from pathlib import Path

    root = Path(trilho.__file__).parent
    borrowed = {}
    for path in sorted(root.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        exported = next((ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                         and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)), [])
        foreign = sorted(set(exported) - _defined_at_top(tree))
        if foreign:
            borrowed[str(path.relative_to(root))] = foreign
    assert not borrowed, f"modules export names they import: {borrowed}"
