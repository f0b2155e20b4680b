"""The hub as a Dagster component: a pipeline spec in a ``defs.yaml`` of any Dagster project.

Dagster 1.13 configures asset factories in YAML through components: a folder under the project's ``defs/``
holds a ``defs.yaml`` whose ``type:`` names a :class:`dagster.Component` subclass and whose ``attributes:``
configure it. :class:`HubPipeline` takes a pipeline spec — a file, or the spec itself inline — and yields
exactly what ``build_definitions`` makes of it in a hub project (assets, checks, the job, the schedule,
sensors), beside the project's own definitions::

    # src/my_project/defs/orders/defs.yaml
    type: hub.dagster.HubPipeline
    attributes:
      spec: orders.yaml          # relative to this folder; or the spec inline as a mapping

The package declares ``hub.dagster`` in the ``dagster_dg_cli.registry_modules`` entry-point group, so
``dg list components`` shows the type and ``dg scaffold defs hub.dagster.HubPipeline NAME`` writes a folder.
The spec's project root (warehouse/, .hub/, contracts/, reports/) is the nearest folder above the spec with a
``pyproject.toml`` or ``workspace.yaml`` — the Dagster project itself.
"""

# No `from __future__ import annotations`: Dagster reads the field annotations at class creation.

from pathlib import Path
from typing import Annotated, Any

import dagster as dg
import yaml

from hub.dagster.definitions import pipeline_definitions
from hub.errors import SpecError
from hub.spec import Pipeline, load
from hub.spec.loader import loads


def _raw(context: dg.ResolutionContext, value: Any) -> Any:
    """The attribute as written: a spec has templates of its own (``{{ partition.start }}``, ``${VAR}``)
    that the hub renders per run, so Dagster's template scope must not touch them."""
    return value


#: A spec file (relative to the component's folder) or the spec inline.
SpecAttribute = Annotated[
    str | dict[str, Any],
    dg.Resolver(_raw, model_field_type=str | dict[str, Any],
                description="A hub pipeline spec: a file name (relative to this defs.yaml's folder) or the spec "
                            "inline (pipeline:, systems:, sources:, ...).",
                examples=["orders.yaml"]),
]


class HubPipeline(dg.Component, dg.Model, dg.Resolvable):
    """One hub pipeline spec: its sources, child tables, models and exports as assets, its expectation suites
    and contracts as asset checks, its job and schedule, and the sensors of its file drops and streams."""

    spec: SpecAttribute

    def load_pipeline(self, folder: Path) -> Pipeline:
        """The spec, loaded and checked like ``hub validate`` does: every problem with its field."""
        if isinstance(self.spec, str):
            path = Path(self.spec)
            return load(path if path.is_absolute() else folder / path)
        if not isinstance(self.spec, dict):
            raise SpecError(str(folder / "defs.yaml"), ["attributes.spec: a spec file name or a mapping"])
        text = yaml.safe_dump(self.spec, sort_keys=False, allow_unicode=True)
        # The inline spec is named after defs.yaml (its project root is found from there); line numbers in
        # errors count within the spec as dumped, the fields they name are the ones written.
        return loads(text, folder / "defs.yaml")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return pipeline_definitions(self.load_pipeline(context.path))
