"""The demo estate speaks events: the ERP announces its orders on RabbitMQ, the inventory its stock movements
over MQTT, and ``hub demo`` shows them landing.

:func:`land` publishes one deterministic batch per stream source of the demo pipeline and drains it into the
event store with :func:`hub.events.drain.drain` — exactly what the Dagster sensor of a stream source does
each tick (acknowledged after the store's commit); the pipeline run that follows absorbs the stored events
into the tables like every stream asset. The events have fixed ids, so running the demo again stores
nothing twice. A broker that is not running is skipped with a message saying so; the rest of the demo does
not need it. The bank calls its payment webhook on ``hub serve``'s application, started for the duration on
a free loopback port (:func:`_serving`): signed deliveries answered ``202`` only after the store's commit.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit

from hub.demo import erp, inventory
from hub.errors import HubError
from hub.events.drain import Drained, drain
from hub.runtime.secrets import mask_url
from hub.spec.loader import Pipeline

ORDER_EVENTS, MOVEMENTS, PAYMENTS = "erp_order_events", "inventory_movements", "bank_payment_events"
#: The days `hub demo` runs (and whose events it lands).
WEEK = (date(2024, 1, 1), date(2024, 1, 7))


def _publisher(pipeline: Pipeline, name: str, start: date, end: date
               ) -> tuple[str, tuple[str, int], Callable[[], int]]:
    """(what the source listens to, the broker's host and port, a function publishing its demo batch)."""
    source = pipeline.sources[name]
    system = source.protocol.resolve_system(source.system_name, source.system, root=pipeline.root)
    if name == ORDER_EVENTS:
        window = (datetime.combine(start, time(), UTC), datetime.combine(end + timedelta(days=1), time(), UTC))
        events = erp.order_events(erp.orders(), *window)
        url = urlsplit(system.url)
        return (f"RabbitMQ ({mask_url(system.url)} queue {source.config.queue})",
                (url.hostname or "127.0.0.1", url.port or 5672),
                lambda: asyncio.run(erp.publish_order_events(system.url, events, source.config.queue)))
    movements = inventory.stock_movements()
    topic = source.config.topics[0]
    return (f"MQTT (mqtt://{system.host}:{system.effective_port} topic {topic})", (system.host, system.effective_port),
            lambda: inventory.publish_movements(system.host, system.effective_port, movements, topic))


def land(pipeline: Pipeline, start: date, end: date, say: Callable[[str], None] = print) -> dict[str, Drained]:
    """Publish the demo's events for [start, end] and drain them into the event store; per source landed,
    what the drains did. Sources whose broker cannot be reached are skipped (and said so)."""
    out: dict[str, Drained] = {}
    for name in (ORDER_EVENTS, MOVEMENTS):
        if name not in pipeline.sources:
            continue
        where, address, publish = _publisher(pipeline, name, start, end)
        try:
            with socket.create_connection(address, timeout=2):
                pass  # a broker that is not running is known at once, not after the consumer's retries
            # subscribe first: the queue is declared, the MQTT session created (a broker keeps QoS 1 messages
            # for a session that exists, not for one that does not yet)
            total = asyncio.run(drain(pipeline, name, max_messages=1_000, timeout=0.3, budget=5))
            sent = publish()
            for _ in range(10):
                got = asyncio.run(drain(pipeline, name, max_messages=10_000, timeout=1.0, budget=10))
                total = Drained(total.received + got.received, total.stored + got.stored,
                                total.duplicates + got.duplicates, total.dead + got.dead, got.lag)
                if total.received >= sent or not got.received:
                    break
        except (HubError, OSError) as exc:
            say(f"{name}: skipped: {where} is not reachable ({str(exc).splitlines()[0]}); the demo goes on "
                "without it")
            continue
        say(f"{name}: published {sent} event(s) to {where}; drained {total.received} into the event store "
            f"({total.stored} new, {total.duplicates} already stored, {total.dead} dead-lettered), acknowledged "
            "after the commit")
        out[name] = total
    if PAYMENTS in pipeline.sources:
        out[PAYMENTS] = _bank_webhook(pipeline, start, end, say)
    return out


def bind_paid_queue(pipeline: Pipeline, say: Callable[[str], None] = print) -> bool:
    """Bind the ERP's queue for ``order.paid`` (what the reconciliation flow publishes) on the demo's RabbitMQ;
    False (and said so) when the broker cannot be reached: the flow's publish step then fails without sending
    anything and is skipped (``on_error: skip``), and a later run with the broker up publishes what is missing.
    Without a bound queue the broker would return every message, which the flow records as failed."""
    if "erp_events" not in pipeline.spec.systems:
        return False
    block = pipeline.spec.systems["erp_events"]
    system = block.protocol.resolve_system("erp_events", block, root=pipeline.root)
    url = urlsplit(system.url)
    where = f"RabbitMQ ({mask_url(system.url)} exchange {erp.PAID_EXCHANGE} -> queue {erp.PAID_QUEUE})"
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 5672), timeout=2):
            pass
        asyncio.run(erp.bind_paid_queue(system.url))
    except Exception as exc:  # any failure (refused, credentials): the demo goes on without it
        why = (str(exc) or type(exc).__name__).splitlines()[0]
        say(f"order.paid: not published: {where} is not reachable ({why}); the flow's publish step sends "
            "nothing and is skipped, a later run with the broker up publishes them")
        return False
    say(f"order.paid: the reconciliation flow publishes to {where}, message id = the delivery's idempotency key")
    return True


def _bank_webhook(pipeline: Pipeline, start: date, end: date, say: Callable[[str], None]) -> Drained:
    """The bank posts the week's payment notifications to the hub's webhook (``hub serve``'s application)."""
    import os

    from hub.demo import bank

    source = pipeline.sources[PAYMENTS]
    notes = bank.payment_notifications(start, end)
    with _serving(pipeline) as base:
        url = base + source.config.path
        counts = bank.call_webhook(url, os.environ["BANK_WEBHOOK_SECRET"], notes)
    say(f"{PAYMENTS}: the bank posted {len(notes)} signed payment notification(s) to {url}; answered 202 after "
        f"the commit: {counts.get('stored', 0)} new, {counts.get('duplicate', 0)} already stored")
    return Drained(len(notes), counts.get("stored", 0), counts.get("duplicate", 0), counts.get("dead", 0), 0)


@contextmanager
def _serving(pipeline: Pipeline) -> Iterator[str]:
    """``hub serve``'s application for *pipeline* under uvicorn on a free loopback port; its base URL."""
    import threading

    import uvicorn

    from hub.serve.app import ServeOptions, build_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(build_app([pipeline], ServeOptions(absorb=False)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="demo-hub-serve", daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        else:
            raise HubError("hub serve did not start for the demo's bank webhook")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
