"""GraphQL adapter (httpx + graphql-core): queries paged by Relay cursors or offset/limit variables as Arrow
batches, ``errors`` as failures, catalogs by introspection or SDL, contracts of what a query selects."""

from typing import TYPE_CHECKING

from adapters.graphql.config import (
    GraphQLPaginateConfig,
    GraphQLSourceConfig,
    GraphQLSystemConfig,
    OffsetVariables,
    RelayPaginate,
)
from adapters.graphql.errors import GraphQLError
from hub.runtime.lazy import lazy

if TYPE_CHECKING:
    from adapters.graphql.calls import CallDocument, call_document, records_at
    from adapters.graphql.catalog import catalog_of, describe, introspect, load_sdl, load_sdl_file, schema_of
    from adapters.graphql.client import GraphQLEndpoint, GraphQLPage, GraphQLSource, GraphQLStats, origin_policy
    from adapters.graphql.contract import ContractChange, call_contract, compare, selection_contract

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
    "call_contract",
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

#: Clients load on first use (hub.runtime.lazy): the registry imports only the models.
__getattr__ = lazy(__name__, {
    "CallDocument": "adapters.graphql.calls",
    "call_document": "adapters.graphql.calls",
    "records_at": "adapters.graphql.calls",
    "catalog_of": "adapters.graphql.catalog",
    "describe": "adapters.graphql.catalog",
    "introspect": "adapters.graphql.catalog",
    "load_sdl": "adapters.graphql.catalog",
    "load_sdl_file": "adapters.graphql.catalog",
    "schema_of": "adapters.graphql.catalog",
    "GraphQLEndpoint": "adapters.graphql.client",
    "GraphQLPage": "adapters.graphql.client",
    "GraphQLSource": "adapters.graphql.client",
    "GraphQLStats": "adapters.graphql.client",
    "origin_policy": "adapters.graphql.client",
    "ContractChange": "adapters.graphql.contract",
    "call_contract": "adapters.graphql.contract",
    "compare": "adapters.graphql.contract",
    "selection_contract": "adapters.graphql.contract",
})
