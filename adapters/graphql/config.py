"""Typed configuration of GraphQL systems and sources, as written in a pipeline spec.

The ``graphql:`` system block mirrors the ``rest:`` one (auth kinds, headers, timeouts, retries, rate limit,
circuit breaker, TLS, origins, size cap) and reuses its models, so a credential is written the same way
whichever protocol carries it. A source names one ``query`` (a GraphQL *query* operation: a source never
writes, so mutations and subscriptions are refused when the spec is loaded), its ``variables`` (the only
part templated by the partition window: values travel as variables, never spliced into the query text),
the ``records`` path inside ``data`` and how to page: Relay cursors or offset/limit variables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.rest import simple_steps
from adapters.rest.config import AuthConfig, TimeoutConfig
from hub.runtime.choice import exactly_one

if TYPE_CHECKING:  # graphql-core (0.15 s) is imported when a GraphQL source is checked, not with every spec
    from graphql import GraphQLSyntaxError, OperationDefinitionNode
from hub.runtime.secrets import Address
from hub.runtime.settings import SystemSettings
from hub.runtime.window import Window, render_tree

#: ``paginate.max_pages`` when the spec gives none (as for REST).
DEFAULT_MAX_PAGES = 10_000
#: The JSON body of a GraphQL response is parsed whole (there is no record array to stream at a known
#: place before ``errors`` is seen), so the default cap is lower than REST's.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GraphQLSystemConfig(SystemSettings, _Strict):  # retries, rate_limit, circuit_breaker: hub.runtime.settings
    """The ``graphql:`` block of a system."""

    endpoint: Address = Field(description="The GraphQL endpoint, e.g. https://api.github.com/graphql (POST).")
    auth: AuthConfig | None = Field(None, description="bearer, api_key, basic or oauth2, as for REST.")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float | TimeoutConfig = Field(default_factory=TimeoutConfig)
    verify: bool | str = Field(True, description="TLS verification: true, or a CA bundle path. Never off silently.")
    allowed_origins: list[str] = Field(default_factory=list, description=(
        "Other origins (https://host[:port]) a redirect may lead to; they are called without credentials, and "
        "any other origin is refused (adapters._http.OriginPolicy)."))
    max_response_bytes: int = Field(DEFAULT_MAX_RESPONSE_BYTES, gt=0, description="Larger bodies are refused.")
    schema_file: Address | None = Field(None, alias="schema", description=(
        "The API's schema as an SDL file (relative to the project), for catalogs and contracts of servers that "
        "turn introspection off; without it the live endpoint is introspected."))

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- pagination ----------------------------------------------------------------------------------------

class RelayPaginate(_Strict):
    """Relay cursor connections: ``pageInfo { hasNextPage endCursor }`` next to the records."""

    cursor_variable: str = Field("after", description="The query variable that carries endCursor to the next page.")
    page_info: str | None = Field(None, description=(
        "Path to pageInfo inside data (dotted or JSONPath). Default: the connection that holds the records "
        "(records repository.issues.nodes or repository.issues.edges[*].node -> repository.issues.pageInfo)."))


class OffsetVariables(_Strict):
    """Offset/limit variables: the next page asks for ``offset + limit``; a short page ends the walk."""

    offset_variable: str = "offset"
    limit_variable: str = "limit"
    limit: int = Field(100, gt=0)
    start: int = Field(0, ge=0)


class GraphQLPaginateConfig(_Strict):
    relay: RelayPaginate | None = None
    offset: OffsetVariables | None = None
    max_pages: int = Field(DEFAULT_MAX_PAGES, gt=0, description=(
        "Safety stop against an API that hands out a next page forever (default 10,000): reaching it is an "
        "error, not silence."))

    @model_validator(mode="after")
    def _exactly_one(self) -> GraphQLPaginateConfig:  # max_pages is not a variant
        exactly_one(self, ("relay", "offset"))
        return self

    @property
    def kind(self) -> str:
        return "relay" if self.relay is not None else "offset"

    @property
    def position_variable(self) -> str:
        """The variable that says where a page starts: the cursor or the offset (what a checkpoint keeps)."""
        if self.relay is not None:
            return self.relay.cursor_variable
        assert self.offset is not None
        return self.offset.offset_variable


# --- source ----------------------------------------------------------------------------------------------

def _operation(document: Any, name: str | None) -> OperationDefinitionNode:
    from graphql import OperationDefinitionNode

    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if not ops:
        raise ValueError("query has no operation (only fragments)")
    if name is not None:
        chosen = [o for o in ops if o.name is not None and o.name.value == name]
        if not chosen:
            names = ", ".join(o.name.value for o in ops if o.name) or "none named"
            raise ValueError(f"operation_name {name!r} is not an operation of the query (it has: {names})")
        return chosen[0]
    if len(ops) > 1:
        raise ValueError("query has several operations: name the one to run with operation_name")
    return ops[0]


def connection_of(records: str) -> str | None:
    """The path of the Relay connection that holds *records*: the part before its ``nodes`` or ``edges``
    step (``repository.issues.edges[*].node`` -> ``repository.issues``); None when there is none."""
    steps = simple_steps(records)
    if steps is None:
        return None
    for i in range(len(steps) - 1, -1, -1):
        kind, arg = steps[i]
        if kind == "k" and arg in ("nodes", "edges"):
            names = [a for k, a in steps[:i] if k == "k"]
            if len(names) != i:  # an index or [*] before the connection: not one connection
                return None
            return ".".join(names)
    return None


class GraphQLSourceConfig(_Strict):
    """The GraphQL-specific keys of a source."""

    query: str = Field(description="One GraphQL query operation (not a mutation). Never templated.")
    variables: dict[str, Any] = Field(default_factory=dict, description=(
        "Variables sent with the query; strings may use {{ partition.* }} templates."))
    operation_name: str | None = Field(None, description="Which operation to run when the query has several.")
    records: str = Field(description="Path inside data to the records: dotted (repository.issues.nodes) or "
                                     "JSONPath ($.repository.issues.edges[*].node).")
    paginate: GraphQLPaginateConfig | None = None

    @field_validator("query")
    @classmethod
    def _parses(cls, value: str) -> str:
        from graphql import GraphQLSyntaxError, parse

        try:
            parse(value, no_location=True)
        except GraphQLSyntaxError as exc:
            raise ValueError(f"query is not valid GraphQL: {exc.message} (line {_line(exc)})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GraphQLSourceConfig:
        from graphql import OperationType

        op = self.operation()
        if op.operation != OperationType.QUERY:
            raise ValueError(f"query is a {op.operation.value}: a source only reads, so it must be a query "
                             "operation (mutations are actions that write, see `hub catalog graphql`)")
        declared = {v.variable.name.value for v in op.variable_definitions or ()}
        p = self.paginate
        needed: list[str] = []
        if p is not None and p.relay is not None:
            needed = [p.relay.cursor_variable]
            if p.relay.page_info is None and connection_of(self.records) is None:
                raise ValueError(f"paginate.relay needs page_info: records '{self.records}' does not go through "
                                 "a connection's nodes or edges, so where pageInfo is cannot be derived")
        elif p is not None and p.offset is not None:
            needed = [p.offset.offset_variable, p.offset.limit_variable]
        missing = [n for n in needed if n not in declared]
        if missing:
            raise ValueError("paginate sets " + ", ".join(f"${n}" for n in missing) + " but the query does not "
                             "declare " + ("it" if len(missing) == 1 else "them") + " (e.g. query Q($after: "
                             "String) { ... })")
        return self

    def operation(self) -> OperationDefinitionNode:
        """The operation this source runs."""
        from graphql import parse

        return _operation(parse(self.query, no_location=True), self.operation_name)

    def rendered(self, window: Window | None, *, field: str) -> GraphQLSourceConfig:
        """This source with its ``variables`` rendered for the partition *window* (``{{ partition.* }}``);
        the query text is left exactly as written. *field* names the source in errors (``sources.NAME``)."""
        variables = render_tree(self.variables, window, field=f"{field}.variables")
        return self.model_copy(update={"variables": variables})

    def page_info_path(self) -> str | None:
        """Where ``pageInfo`` is inside ``data`` (Relay paging only)."""
        p = self.paginate
        if p is None or p.relay is None:
            return None
        if p.relay.page_info is not None:
            return p.relay.page_info
        connection = connection_of(self.records)
        return f"{connection}.pageInfo" if connection else "pageInfo"


def _line(exc: GraphQLSyntaxError) -> str:
    return str(exc.locations[0].line) if exc.locations else "?"
