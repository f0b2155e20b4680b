"""Events from message brokers: the durable store (:mod:`~hub.events.store`), payload reading
(:mod:`~hub.events.payloads`), absorbing stored events into tables (:mod:`~hub.events.absorb`), replay
(:mod:`~hub.events.replay`) and the listener loop (:mod:`~hub.events.listen`). See docs/events.md."""
