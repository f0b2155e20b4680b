"""What the write calls of flows share. Each protocol sends its own (:meth:`hub.protocols.Protocol.send`, in
``hub/protocols/<name>/send.py`` or, for the brokers, the plugin module), and every one follows these rules.

Each sends exactly once: no retries (the flow's ledger and ``retry:`` decide), the system's rate limit and
circuit breaker apply, the call is traced (a ``_hub_calls`` row, ``traceparent`` on the request). Failures
are classified for the ledger: :class:`~hub.errors.DeliveryFailed` when the partner answered no (or nothing
left the host), :class:`~hub.errors.DeliveryUnknown` when the request went out and no answer came back.
"""

from __future__ import annotations

#: HTTP statuses after which the same request may succeed (when it is safe to send again at all).
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
