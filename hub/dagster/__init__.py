"""Dagster glue: Definitions, partitions, schedules, pools and the local instance, built from specs.

The names load on first use (:mod:`hub.runtime.lazy`): ``hub run`` imports :mod:`hub.dagster.run` without
paying for Dagster's components framework (``HubPipeline``, two seconds), and ``dg`` still finds the component
type through ``dir()`` of this module (its ``registry_modules`` entry point)."""

from typing import TYPE_CHECKING

from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from hub.dagster.component import HubPipeline
    from hub.dagster.definitions import DUCKDB_POOL, build_definitions, pipeline_assets, pipeline_definitions

__all__ = ["DUCKDB_POOL", "HubPipeline", "build_definitions", "pipeline_assets", "pipeline_definitions"]

__getattr__ = lazy(__name__, {"HubPipeline": "hub.dagster.component",
                              **{n: "hub.dagster.definitions" for n in __all__ if n != "HubPipeline"}})


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
