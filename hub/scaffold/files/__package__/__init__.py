"""The Dagster code of @PROJECT@: pipeline specs live in ../pipelines, components and assets of your own in defs/."""
