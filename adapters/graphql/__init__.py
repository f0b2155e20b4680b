"""GraphQL adapter (httpx + graphql-core): queries paged by Relay cursors or offset/limit variables as Arrow
batches, ``errors`` as failures, catalogs by introspection or SDL, contracts of what a query selects."""

from adapters.graphql.calls import CallDocument, call_document, records_at
from adapters.graphql.catalog import catalog_of, describe, introspect, load_sdl, load_sdl_file, schema_of
from adapters.graphql.client import GraphQLEndpoint, GraphQLPage, GraphQLSource, GraphQLStats, origin_policy
from adapters.graphql.config import (
    GraphQLPaginateConfig,
    GraphQLSourceConfig,
    GraphQLSystemConfig,
    OffsetVariables,
    RelayPaginate,
)
from adapters.graphql.contract import ContractChange, compare, selection_contract
from hub.errors import GraphQLError

__all__ = [
    "CallDocument",
    "ContractChange",
    "GraphQLEndpoint",
    "GraphQLError",
    "GraphQLPage",
    "GraphQLPaginateConfig",
    "GraphQLSource",
    "GraphQLSourceConfig",
    "GraphQLStats",
    "GraphQLSystemConfig",
    "OffsetVariables",
    "RelayPaginate",
    "call_document",
    "catalog_of",
    "compare",
    "describe",
    "introspect",
    "load_sdl",
    "load_sdl_file",
    "origin_policy",
    "records_at",
    "schema_of",
    "selection_contract",
]
