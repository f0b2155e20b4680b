"""Flows: coordinated multi-step workflows that act on systems, with writes recorded in a delivery ledger so
that each effect happens once (docs/flows.md). The spec models are in :mod:`hub.spec.flows`."""
