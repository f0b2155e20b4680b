"""One exception hierarchy for the whole hub.

Every error a user can meet derives from :class:`HubError`, so callers (the CLI, Dagster assets, the
agent layer) can catch one type and show its message, which is written to be read by a person: it names
the file, field, URL or record involved and what was expected. Messages never contain secret values —
callers mask URLs and headers before building them (see :mod:`hub.runtime.secrets`).
"""

from __future__ import annotations


class HubError(Exception):
    """Base class of every error the hub raises on purpose."""


class SpecError(HubError):
    """A pipeline spec is invalid. Carries every problem found, not only the first."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        plural = "s" if len(problems) != 1 else ""
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem{plural} in pipeline spec:\n{body}")


class SecretError(HubError):
    """A `${VAR}` reference names an environment variable that is not set."""


class AdapterError(HubError):
    """A protocol adapter could not get records from its system."""


class TransportError(AdapterError):
    """The system could not be reached or the connection broke (after retries)."""

    #: True when no connection was made, so no request left the host (flows may send a write again).
    not_sent: bool = False


class HTTPStatusError(AdapterError):
    """The system answered with an HTTP error status (after retries where they apply)."""

    def __init__(self, message: str, *, url: str, status: int) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class ResponseFormatError(AdapterError):
    """The system answered, but the body is not what the spec says it should be."""


class ForeignOriginError(AdapterError):
    """A request would leave the system's origin (a pagination link, a redirect or an address taken from a
    response points elsewhere) and the spec does not allow that origin. Nothing was sent there."""


class LimitExceededError(AdapterError):
    """An input exceeds a resource limit (size, nesting depth, expansion, time) and is refused unread, so a
    small or permitted input cannot exhaust the machine."""


class MappingError(HubError):
    """A record could not be mapped to the columns the spec declares."""


class WarehouseError(HubError):
    """Loading into, or querying, the warehouse failed. The warehouse is left as it was."""


class TimeBudgetExceeded(AdapterError):
    """A source's extraction ran longer than its ``max_duration`` and was stopped (nothing is loaded)."""


class XMLSecurityError(ResponseFormatError):
    """An XML document carries a DTD (entity declarations: XXE, billion laughs); it is refused unread."""


class SoapFault(AdapterError):
    """A SOAP service answered with a Fault. Carries the code, the reason and the detail."""

    def __init__(self, message: str, *, operation: str, code: str, reason: str, detail: str | None) -> None:
        self.operation, self.code, self.reason, self.detail = operation, code, reason, detail
        super().__init__(message)

    @property
    def is_client_fault(self) -> bool:
        """True when the fault says the request itself is wrong (SOAP 1.1 Client, 1.2 Sender, and
        WS-Security failures): retrying the same request cannot help."""
        local = self.code.rsplit(":", 1)[-1].split(".")[0]
        return local in ("Client", "Sender", "FailedAuthentication", "InvalidSecurity", "InvalidSecurityToken",
                         "FailedCheck", "MustUnderstand", "VersionMismatch", "DataEncodingUnknown")


class SourceInterrupted(TransportError):
    """The connection broke after batches were already handed over. The load must start again from the
    beginning: its transaction is rolled back, so nothing is lost or duplicated. Carries the source's retry
    settings, so whoever restarts it (:func:`hub.materialize.materialize_source`) honours them."""

    def __init__(self, message: str, *, max_restarts: int, backoff: float, max_backoff: float) -> None:
        self.max_restarts, self.backoff, self.max_backoff = max_restarts, backoff, max_backoff
        super().__init__(message)


class ThresholdExceeded(HubError):
    """More rows were rejected (mapping and row rules) than ``max_bad_rows`` / ``max_bad_fraction`` allow; the
    load rolled back, nothing changed."""


class FileMissing(HubError):
    """A file a run was asked to load is not in its drop (any more)."""


class PartitionKeyError(HubError):
    """A partition key is not one of the pipeline's partitions."""


class Refused(HubError):
    """The guard refused the call (policy, budget, parameters): nothing was sent to the system."""


class ModelMissing(HubError):
    """A model the hub runs offline (the search embedding model) is not installed; the message names the
    package to install. Search falls back to keywords when it is missing."""


class Unauthorized(HubError):
    """A call to the hub (a webhook, ``POST /runs``) is not authenticated: bad, missing, stale or replayed
    credentials. ``hub serve`` answers 401 and stores nothing."""


class AuthUnavailable(AdapterError):
    """Credentials cannot be checked now (an issuer's key set is unreachable): ``hub serve`` answers 503."""


class CircuitOpenError(HubError):
    """The system's circuit is open: the call was not made."""

    def __init__(self, message: str, *, system: str, half_opens_at: float) -> None:
        super().__init__(message)
        self.system, self.half_opens_at = system, half_opens_at


class SuiteError(HubError):
    """An expectation suite file is invalid; carries every problem ("line N: field: message")."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''} in expectation "
                         f"suite:\n{body}")


class ProtocolError(HubError):
    """A protocol plugin is missing, unknown, or two plugins claim the same name (:mod:`hub.protocols`)."""


class DeliveryError(HubError):
    """A flow's write call did not complete (:mod:`hub.flows`); the subclass says whether it took effect."""


class DeliveryFailed(DeliveryError):
    """The partner answered with a failure: the write did not take effect. *retryable* when the answer says
    trying again may work (HTTP 429/5xx, a connection refused before anything was sent)."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class DeliveryUnknown(DeliveryError):
    """The request was sent and no answer came (a dropped connection, a timeout): the write may or may not
    have taken effect. Never retried blindly: a ``verify:`` lookup resolves it, else it is parked."""
