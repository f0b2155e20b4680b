"""The GraphQL adapter's public errors, in the hub's one hierarchy (an :class:`~hub.errors.AdapterError`)."""

from __future__ import annotations

from hub.errors import AdapterError


class GraphQLError(AdapterError):
    """A GraphQL server answered with ``errors`` (in a 200 response too): the request failed, and any partial
    ``data`` next to the errors is not loaded. Carries each error as ``(path, message)``; *path* is the dotted
    field path the server named (``repository.issues.nodes.3.title``), or "" for a request-level error."""

    def __init__(self, message: str, *, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__(message)
