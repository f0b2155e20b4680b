"""REST's flow writes (:meth:`hub.protocols.rest.RestProtocol.send`): one request sent exactly once, as
:mod:`hub.flows.senders` describes.

Imported by the plugin's hook on first use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from hub.errors import DeliveryFailed, DeliveryUnknown
from hub.flows.senders import RETRYABLE
from hub.protocols import Sent
from hub.runtime import tracing
from hub.runtime.secrets import mask
from hub.spec.loader import Pipeline


def rest_send(pipeline: Pipeline, action: Any, request: dict[str, Any], *, idempotency_key: str | None,
              key_header: str | None) -> Sent:
    """One REST request: the action's method and path, parameters placed by their ``x-in`` (path, query,
    header, body), the system's auth, headers and origin policy."""
    import httpx

    channel = _rest_channel(pipeline, action.system)
    system, client, limiter, breaker = channel.system, channel.client, channel.limiter, channel.breaker
    from hub.protocols.rest import place_params

    path, query, headers, body = place_params(action, request)
    if idempotency_key is not None and key_header:
        headers[key_header] = idempotency_key
    method = str(action.binding["method"]).upper()
    url = system.base_url.rstrip("/") + "/" + path.lstrip("/")
    if breaker is not None:
        breaker.before_call()
    if limiter is not None:
        limiter.acquire()
    where = f"{method} {url}"
    with tracing.call(action.system, f"{method} {action.binding['path']}", where, protocol="rest",
                      attributes=tracing.http_attributes(method, url)) as call:
        try:
            response = client.request(method, url, params={**system.params, **query}, json=body,
                                      headers=tracing.inject(dict(headers)))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            if breaker is not None:
                breaker.failure(type(exc).__name__)
            raise DeliveryFailed(f"{mask(where)}: cannot connect ({type(exc).__name__}); nothing was sent",
                                 retryable=True) from None
        except httpx.HTTPError as exc:
            if breaker is not None:
                breaker.failure(type(exc).__name__)
            raise DeliveryUnknown(f"{mask(where)}: the request was sent and no complete answer came "
                                  f"({type(exc).__name__}: {mask(str(exc))}); it may have taken effect") from None
        call.http_status, call.bytes = response.status_code, len(response.content)
        if breaker is not None:
            if response.status_code >= 500:
                breaker.failure(f"HTTP {response.status_code}")
            else:
                breaker.success()
        try:
            doc: Any = response.json() if response.content else None
        except ValueError:
            doc = {"text": response.text[:2000]}
        if response.status_code >= 400:
            raise DeliveryFailed(f"{mask(where)}: HTTP {response.status_code}: {mask(response.text[:300])}",
                                 retryable=response.status_code in RETRYABLE, status=response.status_code)
    return Sent(doc, response.status_code, f"HTTP {response.status_code}")


@dataclass
class _RestChannel:
    system: Any
    client: Any
    limiter: Any
    breaker: Any


_channels: dict[tuple[str, str, str], _RestChannel] = {}


_channels_lock = threading.Lock()


def _rest_channel(pipeline: Pipeline, system_name: str) -> _RestChannel:
    """One httpx client per system and spec in this process (connections kept alive, the TLS context built
    once: building it costs ~30 ms, more than a loopback request), with the system's rate limiter and breaker."""
    import httpx

    from adapters.rest import build_auth, origin_policy
    from hub.materialize import state_dir
    from hub.runtime.breaker import breaker_for
    from hub.runtime.ratelimit import limiter_for, system_key

    block = pipeline.spec.systems[system_name]
    key = (str(pipeline.path), system_name, block.model_dump_json())  # a changed spec gets a new client
    with _channels_lock:
        found = _channels.get(key)
        if found is not None:
            return found
        system = block.protocol.resolve_system(system_name, block)
        timeout = system.timeout if isinstance(system.timeout, (int, float)) else system.timeout.read
        client = httpx.Client(auth=build_auth(system.auth), headers={**system.headers}, verify=system.verify,
                              timeout=timeout, event_hooks=origin_policy(system, system_name).hooks(),
                              limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        skey = system_key(system_name, system.base_url)
        state = state_dir(pipeline.root)
        found = _RestChannel(system, client, limiter_for(skey, system.rate_limit, state),
                             breaker_for(skey, system.circuit_breaker, state))
        _channels[key] = found
        return found
