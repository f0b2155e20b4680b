"""The Dagster code location: every pipeline spec in this folder becomes assets, a job and a schedule."""

from pathlib import Path

from hub.dagster import build_definitions

defs = build_definitions(Path(__file__).parent)
