"""The reference pages, generated from the code: every experiment-file key from its schema (type,
default, and the comment above it in ``trilho/experiment.py``), every CLI command and option from the
CLI itself. ``make docs`` runs this before ``mkdocs build --strict``; a test holds every key and
option to an entry.

    python docs/reference.py            # writes docs/reference/experiment.md and docs/reference/cli.md
"""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _comments(cls: type) -> dict[str, str]:
    """Each field's comment: the ``#`` lines right above it in the class body, joined."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, i = [], node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            trailing = lines[node.lineno - 1].split("#", 1)
            if len(trailing) == 2 and not above:
                above = [trailing[1].strip()]
            found[node.target.id] = " ".join(above)
    return found


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return text.replace("NoneType", "None")


def _own_doc(cls: type) -> str:
    """The first paragraph of a class's own docstring (not one it inherits from pydantic)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return doc.split("\n\n")[0].replace("\n", " ")


def experiment_keys() -> list[dict[str, str]]:
    """Every key of an experiment file, dotted, with its type, default and what it does."""
    from pydantic import BaseModel

    from trilho.experiment import Experiment

    rows: list[dict[str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        said: dict[str, str] = {}
        for base in reversed([c for c in model.__mro__ if issubclass(c, BaseModel) and c.__module__.startswith("trilho")]):
            said.update({k: v for k, v in _comments(base).items() if v})  # a subclass's fields, then its own
        for name, field in model.model_fields.items():
            key = f"{prefix}{name}"
            annotation = field.annotation
            nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            default = "required" if field.is_required() else json.dumps(
                field.get_default(call_default_factory=True), default=str)
            if nested is not None:
                default = "(a table)"
            rows.append({"key": key, "type": "table" if nested else _type(annotation), "default": default,
                         "what": said.get(name, "") or _own_doc(nested) if nested else said.get(name, "")})
            if nested is not None:
                walk(nested, key + ".")

    walk(Experiment, "")
    return rows


def cli_commands() -> list[dict[str, Any]]:
    """Every command with its help and options, as the CLI itself defines them."""
    import typer

    from trilho.cli import app

    group = typer.main.get_command(app)  # typer's own click: read by duck typing
    out = []
    for name in sorted(group.commands):
        command = group.commands[name]
        options = []
        for param in command.params:
            if param.name == "help":
                continue
            option = param.param_type_name == "option"
            names = list(param.opts) + list(getattr(param, "secondary_opts", []))
            options.append({"name": param.name, "flags": ", ".join(names) if option else (param.name or "").upper(),
                            "kind": "option" if option else "argument",
                            "help": (getattr(param, "help", None) or "").replace("\n", " "),
                            "default": None if param.default in (None, ()) or callable(param.default) else param.default,
                            "envvar": param.envvar, "required": param.required})
        out.append({"name": name, "help": (command.help or "").strip(), "options": options})
    return out


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def experiment_page() -> str:
    lines = ["# Experiment file keys", "",
             "Generated from `trilho/experiment.py` by `docs/reference.py`: every key an experiment file (TOML or "
             "YAML) may hold, and every key `--set key=value` overrides. `trilho config -e FILE` prints a file's "
             "resolved values.", "",
             "| key | type | default | what it does |", "|---|---|---|---|"]
    for row in experiment_keys():
        lines.append(f"| `{row['key']}` | {_cell(row['type'])} | `{_cell(row['default'])}` | {_cell(row['what'])} |")
    return "\n".join(lines) + "\n"


def cli_page() -> str:
    lines = ["# Command line", "", "Generated from the CLI itself by `docs/reference.py`: `trilho COMMAND --help` "
             "says the same.", ""]
    for command in cli_commands():
        lines += [f"## `trilho {command['name']}`", "", command["help"], ""]
        if command["options"]:
            lines += ["| option | default | environment | what it does |", "|---|---|---|---|"]
            for o in command["options"]:
                default = "required" if o["required"] else ("" if o["default"] is None else f"`{_cell(o['default'])}`")
                env = f"`{o['envvar']}`" if o["envvar"] else ""
                lines.append(f"| `{_cell(o['flags'])}` | {default} | {env} | {_cell(o['help'])} |")
            lines.append("")
    return "\n".join(lines) + "\n"


def write(to: Path = HERE) -> None:
    (to / "reference").mkdir(parents=True, exist_ok=True)
    (to / "reference" / "experiment.md").write_text(experiment_page(), encoding="utf-8")
    (to / "reference" / "cli.md").write_text(cli_page(), encoding="utf-8")
    for name in ("STATISTICS.md", "BENCHMARKS.md"):  # kept at the root, where the tools' messages point
        shutil.copyfile(ROOT / name, to / name.lower())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    write()
    print(f"wrote {HERE / 'reference'}")
