"""The specs of one project, checked together.

One Dagster code location loads every spec of a folder, and specs of a project usually share one warehouse:
two specs naming the same asset make the code location fail to load (``asset 'erp_orders' is already
defined``) and, run one by one, the second replaces the first's table with rows of another shape. Each
spec can be valid alone; only the set can say it collides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from hub.errors import SpecError
from hub.spec.loader import Loc, Pipeline, _marks_of, _Problems, discover, load


def neighbours(paths: Iterable[Path]) -> list[Path]:
    """Every spec that shares a code location or a project with one of *paths*: the specs of each one's own
    folder and of its project's ``pipelines/`` folder, *paths* first."""
    seen: dict[Path, None] = {}
    for path in paths:
        seen[path.resolve()] = None
    for path in list(seen):
        folders = {path.parent}
        for parent in [path.parent, *path.parent.parents]:
            if (parent / "workspace.yaml").exists() or (parent / "pyproject.toml").exists():
                folders.add(parent / "pipelines")
                break
        for folder in folders:
            if folder.is_dir():
                for found in discover(folder):
                    seen.setdefault(found.resolve(), None)
    return list(seen)


def _where(p: Pipeline, asset: str) -> Loc:
    if asset in p.spec.sources:
        return ("sources", asset)
    if asset in p.spec.models:
        return ("models", asset)
    if asset in p.spec.exports:
        return ("exports", asset)
    parent = p.parent_of(asset)
    return ("sources", parent, "children", asset) if parent else ()


def collisions(pipelines: Sequence[Pipeline]) -> dict[Path, list[tuple[Loc, str]]]:
    """Problems (where in the spec, what) per spec path: asset names (sources, child tables, models, exports)
    and pipeline names used by more than one spec. Each problem names the other spec."""
    out: dict[Path, list[tuple[Loc, str]]] = {}
    owner: dict[str, Pipeline] = {}
    names: dict[str, Pipeline] = {}
    for p in pipelines:
        first = names.setdefault(p.name, p)
        if first is not p:
            for this, that in ((p, first), (first, p)):
                out.setdefault(this.path, []).append((("pipeline",), f"'{p.name}' is also the name of the pipeline "
                                                                     f"in {that.path}; pipeline names must be unique"))
        for asset in p.asset_names():
            other = owner.setdefault(asset, p)
            if other is not p:
                shared = " and the same warehouse" if other.warehouse_url == p.warehouse_url else ""
                for this, that in ((p, other), (other, p)):  # reported in both specs, whichever is checked
                    out.setdefault(this.path, []).append((_where(this, asset), (
                        f"'{asset}' is also an asset of pipeline '{that.name}' ({that.path}); asset and table "
                        f"names must be unique across the specs of a project (one code location{shared})")))
    return out


def describe(pipeline: Pipeline, problems: list[tuple[Loc, str]]) -> SpecError:
    """*problems* of *pipeline* as a :class:`SpecError`, each with its line in the spec file."""
    try:
        text = pipeline.path.read_text(encoding="utf-8")
    except OSError:
        text = ""
    found = _Problems(pipeline.path, _marks_of(text))
    for loc, message in problems:
        found.add(loc, message)
    return SpecError(str(pipeline.path), [m for _, m in sorted(found.items, key=lambda t: t[0])])


def check_together(paths: Sequence[Path], pipelines: dict[Path, Pipeline] | None = None
                   ) -> dict[Path, SpecError | None]:
    """Load *paths* with their neighbours (:func:`neighbours`) and check them together. Returns, for each of
    *paths*, its error (every problem of the spec alone, or its collisions with the others) or None; each
    valid one's loaded pipeline is put in *pipelines* when given (so callers do not load it again)."""
    loaded: dict[Path, Pipeline] = {}
    result: dict[Path, SpecError | None] = {}
    wanted = {p.resolve(): p for p in paths}
    for path in neighbours(paths):
        try:
            loaded[path] = load(wanted.get(path, path))
        except SpecError as exc:
            if path in wanted:
                result[wanted[path]] = exc
    found = collisions(list(loaded.values()))
    for path, given in wanted.items():
        if given in result:
            continue
        problems = found.get(loaded[path].path, [])
        result[given] = describe(loaded[path], problems) if problems else None
        if pipelines is not None and result[given] is None:
            pipelines[given] = loaded[path]
    return result
