"""The code a logged model carries: where its files are, and its module as MLflow runs it.

``servable.py`` is MLflow's ``python_model``, and ``encoding.py`` and ``answers.py`` its code paths;
all three are copied into every logged model and import nothing of trilho but each other (a model
logged before answers.py existed carries the functions in its own encoding.py, and its own servable). trilho never imports
``servable`` as ``trilho.model.servable``: it loads the file by path, as MLflow will.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["CODE_PATHS", "SERVABLE", "servable"]

SERVABLE = Path(__file__).with_name("servable.py")
CODE_PATHS = (Path(__file__).with_name("encoding.py"), Path(__file__).with_name("answers.py"))


@functools.cache
def servable() -> Any:
    """The logged model's own code, as MLflow will run it (loaded by path, never imported by trilho;
    loaded once: it defines functions and classes, and registers its model with MLflow)."""
    found = importlib.util.spec_from_file_location("trilho_servable", SERVABLE)
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module
