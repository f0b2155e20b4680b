"""Dagster glue: Definitions, partitions, schedules, pools and the local instance, built from specs."""

from hub.dagster.definitions import DUCKDB_POOL, build_definitions, pipeline_assets, pipeline_definitions

__all__ = ["DUCKDB_POOL", "build_definitions", "pipeline_assets", "pipeline_definitions"]
