"""Protocol adapters: connect, authenticate, page and stream records as Arrow batches.

Adapters never import Dagster; they are usable (and tested) on their own.
"""
