"""Dagster glue: Definitions, partitions, schedules, pools and the local instance, built from specs."""

from hub.dagster.component import HubPipeline
from hub.dagster.definitions import DUCKDB_POOL, build_definitions, pipeline_assets, pipeline_definitions

__all__ = ["DUCKDB_POOL", "HubPipeline", "build_definitions", "pipeline_assets", "pipeline_definitions"]
