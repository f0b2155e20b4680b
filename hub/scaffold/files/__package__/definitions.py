"""This project's Dagster definitions: every hub pipeline spec in ../pipelines (assets, checks, jobs,
schedules, sensors) and whatever the defs/ folder holds (components, your own assets)."""

from pathlib import Path

import dagster as dg

from hub.dagster import build_definitions

PROJECT = Path(__file__).resolve().parent.parent


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(build_definitions(PROJECT / "pipelines"),
                                dg.load_from_defs_folder(path_within_project=PROJECT))
