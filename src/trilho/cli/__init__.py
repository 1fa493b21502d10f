"""The ``trilho`` command: parse, load settings, call the API, print. Each command is a few lines
over the importable API; a ``TrilhoError`` becomes one readable line and exit status 1."""

from trilho.cli import experiment, registry, services, serving  # noqa: F401 - each module registers its commands
from trilho.cli._app import app

__all__ = ["app"]
