"""The checks of ``flows:`` against the systems' actions, run by ``hub validate`` (the spec-only checks run
when a spec loads, :mod:`hub.spec.flows`): every action a flow names exists in the live catalog (with the
closest names when it does not), its protocol can send writes, every parameter is one the action takes,
required parameters are given, literal values fit the parameter's schema, fields of a JSON body are fields
of the body's schema, and ``retry`` is declared only where sending again is safe."""

from __future__ import annotations

from typing import Any

from hub import protocols
from hub.agent.catalog import Action, Catalog, build_catalog
from hub.agent.params import problems
from hub.errors import HubError
from hub.runtime.window import is_template
from hub.spec.flows import StepSpec, walk
from hub.spec.loader import Loc, Pipeline

Problem = tuple[Loc, str]


def check_actions(pipeline: Pipeline, catalog: Catalog | None = None) -> tuple[list[Problem], list[str]]:
    """Problems (location, message) of the pipeline's flows against the actions of their systems, and notes
    on systems that could not be read (their actions are then checked as far as the spec describes them)."""
    if not pipeline.spec.flows:
        return [], []
    systems = {str(s.action).split(".", 1)[0] for f in pipeline.spec.flows.values() for _, s, _ in walk(f.steps, ())
               if s.action} | {c.call.split(".", 1)[0] for f in pipeline.spec.flows.values()
                               for _, s, _ in walk(f.steps, ()) for c in (s.compensate, s.verify) if c is not None}
    catalog = catalog or build_catalog([pipeline], systems=systems & set(pipeline.spec.systems))
    out: list[Problem] = []
    notes = [f"systems.{s}: could not be read to check the flows' actions: {why}" for s, why in catalog.errors.items()]
    for name, flow in pipeline.spec.flows.items():
        for loc, step, _ in walk(flow.steps, ("flows", name, "steps")):
            for key, action, params in _calls(step):
                found = _action(catalog, action, (*loc, *key), out)
                if found is None:
                    continue
                write = key[0] in ("call", "compensate")
                if write and not protocols.get(found.protocol).sends:
                    out.append(((*loc, *key), f"{found.name}: protocol {found.protocol} cannot send writes from "
                                              "flows"))
                skip = {step.idempotency.param} if step.idempotency and step.idempotency.param and \
                    key[0] == "call" else set()
                out += _params(found, params, (*loc, *key[:-1], "params"), skip)
                if key == ("call",) and step.retry is not None and step.retry.attempts > 1 and \
                        step.idempotency is None and found.side_effect != "read" and \
                        not found.binding.get("idempotent"):
                    out.append(((*loc, "retry"), f"{found.name} is a write without an idempotency key: sending it "
                                                 "again could act twice, so it is never retried (declare "
                                                 "idempotency:, or remove retry:)"))
    return out, notes


def _calls(step: StepSpec) -> list[tuple[Loc, str, dict[str, Any]]]:
    out: list[tuple[Loc, str, dict[str, Any]]] = []
    if step.call:
        out.append((("call",), step.call, step.params))
    if step.lookup:
        out.append((("lookup",), step.lookup, step.params))
    if step.compensate:
        out.append((("compensate", "call"), step.compensate.call, step.compensate.params))
    if step.verify:
        out.append((("verify", "call"), step.verify.call, step.verify.params))
    return out


def _action(catalog: Catalog, name: str, loc: Loc, out: list[Problem]) -> Action | None:
    if name not in catalog and name.split(".", 1)[0] in catalog.errors:
        return None  # reported once as a note: the system could not be read (no search for close names)
    try:
        return catalog.get(name)
    except HubError as exc:
        out.append((loc, str(exc)))
        return None


def _literal(value: Any) -> bool:
    if isinstance(value, str):
        return not is_template(value)
    if isinstance(value, dict):
        return all(_literal(v) for v in value.values())
    if isinstance(value, list):
        return all(_literal(v) for v in value)
    return True


def _params(action: Action, params: dict[str, Any], loc: Loc, skip: set[str]) -> list[Problem]:
    schema = action.input_schema or {}
    props: dict[str, Any] = schema.get("properties") or {}
    closed = protocols.get(action.protocol).closed_inputs(action)
    out: list[Problem] = []
    for key, value in params.items():
        prop = props.get(key)
        if prop is None:
            if closed:
                out.append(((*loc, key), f"'{key}' is not a parameter of {action.name} (parameters: "
                                         f"{', '.join(props) or 'none'})"))
            continue
        if _literal(value):
            for p in problems({"type": "object", "properties": {key: prop}}, {key: value}):
                out.append(((*loc, key), f"{action.name}: {p}"))
        elif isinstance(value, dict) and isinstance(prop.get("properties"), dict):
            fields = prop["properties"]
            for sub, subvalue in value.items():
                if sub not in fields and prop.get("additionalProperties") is False:
                    out.append(((*loc, key, sub), f"'{sub}' is not a field of the {key} of {action.name} "
                                                  f"(fields: {', '.join(fields)})"))
                elif sub in fields and _literal(subvalue):
                    for p in problems({"type": "object", "properties": {sub: fields[sub]}}, {sub: subvalue}):
                        out.append(((*loc, key, sub), f"{action.name}: {p}"))
            for req in prop.get("required") or []:
                if req not in value and f"{key}.{req}" not in skip:
                    out.append(((*loc, key), f"{action.name}: the {key} needs field '{req}'"))
    for req in schema.get("required") or []:
        if req not in params and req not in skip:
            out.append((loc, f"{action.name}: required parameter '{req}' is missing"))
    return out
