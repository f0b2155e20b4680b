"""Where the user's project is: found from where the user stands, never from the package's own location.

A project is the nearest directory, from the current directory upwards, that holds ``workspace.yaml`` or
``pyproject.toml`` — the rule the spec loader uses for a spec's root (:func:`hub.spec.loader.project_root`),
so the command line and a spec agree on where ``warehouse/``, ``.hub/``, ``.dagster/``, ``contracts/`` and
``reports/`` are. With neither anywhere above, the current directory is the project. ``hub --project DIR``
(or ``$HUB_PROJECT``) starts the search at DIR instead. A ``[tool.hub]`` table in the project's
``pyproject.toml`` may name the folders that hold pipeline specs (``pipelines = ["pipelines", ...]``,
relative to the project; default ``pipelines``).

The demo estate's project (its spec, expectation suites and contract snapshots) ships inside the package
(``hub/demo/project``); :func:`install_demo` copies it into a project, so ``hub demo`` writes only there.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hub.errors import HubError

MARKERS = ("workspace.yaml", "pyproject.toml")

#: Set by ``hub --project DIR``; the environment variable carries it to subprocesses (``dagster dev``).
ENV = "HUB_PROJECT"

_override: Path | None = None


@dataclass(frozen=True)
class Project:
    """One project's folders. Every path is absolute."""

    root: Path
    spec_folders: tuple[Path, ...]

    @property
    def state_dir(self) -> Path:
        """The hub's own state (rate limits, checkpoints, the demo's inventory): ``$HUB_STATE_DIR`` or .hub/."""
        return Path(os.environ.get("HUB_STATE_DIR") or self.root / ".hub")

    @property
    def contracts_dir(self) -> Path:
        return self.root / "contracts"

    @property
    def reports_dir(self) -> Path:
        return Path(os.environ.get("HUB_REPORTS_DIR") or self.root / "reports")

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    def specs(self) -> list[Path]:
        """Every pipeline spec of the project's spec folders, sorted per folder."""
        from hub.spec.loader import discover

        return [p for folder in self.spec_folders if folder.is_dir() for p in discover(folder)]

    def spec_path(self, given: Path) -> Path:
        """*given* as the user meant it: as given when it exists (relative to the current directory), else
        relative to the project (``hub --project ../proj run pipelines/x.yaml``)."""
        if given.is_absolute() or given.exists():
            return given
        inside = self.root / given
        return inside if inside.exists() else given


def marked(folder: Path) -> bool:
    """Whether *folder* holds a project marker."""
    return any((folder / m).is_file() for m in MARKERS)


def find(start: Path | None = None) -> Project:
    """The project holding *start* (default: the current directory): the nearest directory with a marker,
    else *start* itself."""
    here = (start or Path.cwd()).resolve()
    root = next((d for d in (here, *here.parents) if marked(d)), here)
    return Project(root=root, spec_folders=tuple(root / f for f in _spec_folder_names(root)))


def _spec_folder_names(root: Path) -> list[str]:
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return ["pipelines"]
    try:
        table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("hub", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise HubError(f"{pyproject}: not readable TOML: {exc}") from None
    folders = table.get("pipelines", ["pipelines"])
    if isinstance(folders, str):
        folders = [folders]
    if not isinstance(folders, list) or not all(isinstance(f, str) for f in folders):
        raise HubError(f"{pyproject}: [tool.hub] pipelines must be a folder or a list of folders")
    return folders


def use(directory: Path | None) -> None:
    """Make *directory* where the project search starts (``hub --project``), for this process and its
    subprocesses."""
    global _override
    _override = directory.resolve() if directory is not None else None
    if _override is not None:
        if not _override.is_dir():
            raise HubError(f"--project {directory}: not a directory")
        os.environ[ENV] = str(_override)


def current() -> Project:
    """The project of this command: from ``--project`` / ``$HUB_PROJECT``, else from the current directory."""
    start = _override or (Path(os.environ[ENV]) if os.environ.get(ENV) else None)
    return find(start)


# -- the demo project ---------------------------------------------------------------------------------------

DEMO_SPEC = Path("pipelines") / "demo.yaml"

#: What makes a folder without a marker a project Dagster can load (``hub ui``): the same files ``hub init``
#: writes, less the example.
WORKSPACE_YAML = """\
# The Dagster code location of this project: every pipeline spec in pipelines/ (see pipelines/definitions.py).
load_from:
  - python_file:
      relative_path: pipelines/definitions.py
      location_name: hub
      working_directory: .
"""

DEFINITIONS_PY = '''\
"""The Dagster code location: every pipeline spec in this folder becomes assets, a job and a schedule."""

from pathlib import Path

from hub.dagster import build_definitions

defs = build_definitions(Path(__file__).parent)
'''


def packaged_demo() -> Path:
    """The demo project shipped in the package (read-only: an installed package is never written to)."""
    return Path(str(resources.files("hub.demo") / "project"))


def install_demo(root: Path) -> list[Path]:
    """Copy the packaged demo project's files that *root* lacks (pipelines/demo.yaml, contracts/demo/...)
    into *root*, and make *root* a project Dagster can load when it holds no marker. Files already there are
    kept (the project's own copy wins: edits survive). Returns the files written."""
    source = packaged_demo()
    written: list[Path] = []
    found = [Path(folder, name) for folder, _, names in os.walk(source, followlinks=True) for name in names]
    for path in sorted(found):  # os.walk: a checkout's contracts/demo is a symlink (rglob would skip it)
        if path.name.startswith(".") or "__pycache__" in path.parts:
            continue
        target = root / path.relative_to(source)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            written.append(target)
    if not marked(root):
        (root / "workspace.yaml").write_text(WORKSPACE_YAML, encoding="utf-8")
        written.append(root / "workspace.yaml")
        definitions = root / "pipelines" / "definitions.py"
        if not definitions.exists():
            definitions.write_text(DEFINITIONS_PY, encoding="utf-8")
            written.append(definitions)
    return written
