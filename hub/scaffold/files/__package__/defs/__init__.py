"""Dagster components and definitions of your own (`dg scaffold defs ...`); loaded beside the hub's pipelines."""
