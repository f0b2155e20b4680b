"""``hub init``: a project a user can commit, ready for the hub and for Dagster.

The files are in ``files/`` (package data): a ``pyproject.toml`` that marks the project for the hub
(``[tool.hub]``) and makes it a ``dg`` project (``[tool.dg]``), a ``workspace.yaml`` for ``dagster dev`` /
``hub ui``, a Python package with the code location (``definitions.py``: every spec of ``pipelines/`` plus
the ``defs/`` folder), a commented example spec that validates, ``contracts/``, ``.env.example``,
``.gitignore`` and a README. Dot-files are stored without their dot (``gitignore``) so every packaging tool
ships them, and pyproject.toml as pyproject.toml.in (it is a template, not this package's metadata).
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path

from hub import __version__
from hub.errors import HubError

#: Stored name -> name in the project.
_RENAMED = {"gitignore": ".gitignore", "env.example": ".env.example", "pyproject.toml.in": "pyproject.toml"}
#: Files whose text names the project or its package.
_TEMPLATED = {"pyproject.toml.in", "workspace.yaml", "README.md", "__init__.py", "definitions.py"}


def package_name(project: str) -> str:
    """A Python package name for the project folder *project* (``my-data`` -> ``my_data``)."""
    name = re.sub(r"\W+", "_", project.strip().lower()).strip("_") or "pipelines_project"
    if name[0].isdigit() or keyword.iskeyword(name) or name in ("hub", "dagster", "pipelines", "contracts"):
        name = f"{name}_project"
    return name


def files() -> Path:
    return Path(str(resources.files("hub.scaffold") / "files"))


def init(directory: Path, name: str | None = None) -> tuple[list[Path], list[Path]]:
    """Write the project into *directory* (created when missing). Files already there are never overwritten.
    Returns (written, kept)."""
    directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise HubError(f"{directory} is not a folder")
    project = name or directory.name
    package = package_name(project)
    values = {"@PROJECT@": project, "@PACKAGE@": package, "@HUB_VERSION@": __version__}
    source = files()
    written: list[Path] = []
    kept: list[Path] = []
    for path in sorted(source.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        relative = path.relative_to(source)
        parts = [package if p == "__package__" else _RENAMED.get(p, p) for p in relative.parts]
        target = directory.joinpath(*parts)
        if target.exists():
            kept.append(target)
            continue
        text = path.read_text(encoding="utf-8")
        if path.name in _TEMPLATED:
            for key, value in values.items():
                text = text.replace(key, value)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written, kept
