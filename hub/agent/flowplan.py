"""Plans that act: a request that changes systems ("when a payment arrives for an order, mark it paid in the ERP
and log an activity in the CRM") becomes a **flow spec** (docs/flows.md) instead of a refusal.

The offline planner reads such a request in four parts, each from the estate rather than from a list of cases:

* **the trigger** — a leading or trailing "when / whenever / once / after (each) / if ..." clause names the
  table whose new rows start the flow (``trigger: {after: <source>}``, or ``{events: <source>}`` for a stream
  source); time words give a schedule; nothing gives a manual flow;
* **the writes** — every clause that starts with a change verb is matched to one of the catalog's *write*
  actions by the words of its name and description and the system it names ("mark it paid in the ERP" ->
  ``erp.MarkOrderPaid``); a clause no write action does is a refusal, as before;
* **the input** — the tables the request names outside the write clauses (the trigger's table first), joined by
  the keys the read planner finds (names, types, sample values: ``ORD-100001`` = order 100001), loaded by
  sources copied from the given specs: the read side of the plan;
* **the field mapping** — each input field of each action (a JSON body's fields one by one) takes the input
  column or an earlier step's output that matches it by name, type and meaning (the thesaurus), or a value
  derived from sample values (an ``ORD-`` reference read as the order's number); an enum takes the value the
  request names; a required text field no column gives is written from the request and the item's keys;
  a comparison in an "if" clause becomes the step's ``when``.

The flow is marked ``approved: false`` with ``planned_by``: ``hub flow run`` refuses it without ``--approve``
and Dagster gives it no trigger. The policy decides which side effects a planned flow may have
(``agent.flow_effects``, default create and update): a request whose verb or action deletes or overwrites data
is refused with the reason. Validation, the dry run and the sample requests are :func:`validate_flow`'s.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml

from hub.agent import understand as u
from hub.agent.planner import (
    CatalogLike,
    Column,
    PlanResult,
    Sample,
    Table,
    Vocabulary,
    _affix,
    _compatible,
    _is_read,
    _kind,
    _tokenize,
    _unwrap,
    dump_spec,
    join_keys,
    read_request,
    samples,
    system_raw,
    universe,
)
from hub.errors import HubError, Refused, SpecError
from hub.spec import Pipeline, loads

# ------------------------------------------------------------------------------------------------ effects

#: Verbs whose effect removes or overwrites what a system holds: a planned flow may do this only when the
#: policy lists "delete" in ``agent.flow_effects``. Any other change verb creates or updates.
DESTRUCTIVE = {u.stem(w) for w in u._words("""
delete remove drop truncate purge wipe erase destroy reset overwrite clear empty nullify zero blank unset void
cancel discontinue retire terminate revoke kill unsubscribe deactivate disable replace scrap discard expunge
""")}
#: Verbs that change an existing record (an update); the rest of the change verbs create.
UPDATING = {u.stem(w) for w in u._words("""
set update mark flag change modify edit amend correct adjust fix rename move assign reassign promote demote
upgrade downgrade lock unlock enable activate approve reject close reopen settle increase decrease raise lower
bump reprice restock restore switch swap turn tag convert apply
""")}
DEFAULT_EFFECTS = ("create", "update")
#: Names of free-text inputs (a note, a title): written from the request and the item, never copied from a
#: column that merely shares the name (an order's own note is no activity's note).
_FREE_TEXT = {u.stem(w) for w in u._words("note title subject text message comment description remark summary body")}
#: Verbs that say something happened to a record (the event of a trigger clause: "a payment arrives").
_EVENT_VERBS = set(u._words("""
arrive come land book pay settle receive post log appear ship place open close change update create fail
"""))


def verb_effect(verb: str) -> str:
    """create, update or delete: what a change verb does to the records it names."""
    st = u.stem(verb)
    return "delete" if st in DESTRUCTIVE else "update" if st in UPDATING else "create"


def action_effect(action: Any) -> str:
    """create, update or delete: what a write action does, as its protocol reads it from the binding (REST:
    the HTTP method), else from the verb its name starts with (SOAP operations, SQL modes, GraphQL mutations)."""
    from hub import protocols

    known = protocols.get(action.protocol).write_effect(action.binding or {})
    if known is not None:
        return known
    op = action.name.split(".", 1)[-1]
    first = (u.split_words(op) or [""])[0]
    if first in ("insert", "publish", "post", "create", "add", "log", "send"):
        return "create"
    return verb_effect(first)


def allowed_effects(pipelines: Sequence[Pipeline], action: Any) -> list[str]:
    """The side effects the policy allows a planned flow on *action*'s pipeline (``agent.flow_effects``)."""
    for p in pipelines:
        if p.name == getattr(action, "pipeline", None) or action.system in p.spec.systems:
            agent = p.spec.agent
            return list(agent.flow_effects) if agent is not None else list(DEFAULT_EFFECTS)
    return list(DEFAULT_EFFECTS)


# ------------------------------------------------------------------------------------------- the request

_TRIGGER_HEAD = re.compile(r"^\s*(?:(?:and\s+)?(when(?:ever)?|once|as soon as|each time|every time|"
                           r"after(?: each| every)?|if|on each|on every)\b)(?P<cond>.*?)(?:,|\bthen\b)\s*"
                           r"(?P<rest>.+)$", re.I | re.S)
_TRIGGER_TAIL = re.compile(r"^(?P<rest>.+?)\s*,?\s+\b(?P<kw>when(?:ever)?|once|as soon as|each time|every time|"
                           r"after(?: each| every)?|if)\b(?P<cond>.+)$", re.I | re.S)
_SPLIT = re.compile(r"\s*(?:[,;]\s*(?:and\s+|then\s+)*|\band then\b|\bthen\b|\band\b)\s*", re.I)


@dataclass
class Clause:
    """One write the request asks for: its text, its verb and the action that does it."""

    text: str
    verb: str
    action: Any = None
    score: float = 0.0
    words: set[str] = field(default_factory=set)  # stems that named the action (not tables of the input)
    #: a condition of this write alone ("for the ones above 1,000 euros also leave a note"): its words
    condition: str = ""


@dataclass
class Acting:
    """A request read as a flow: the trigger's text and kind, whether it is a condition, and the writes."""

    trigger: str
    kind: str  # when | if | after | none
    clauses: list[Clause]
    #: what comes before the first write and is no trigger ("for every order the bank has paid, ..."): it names
    #: the records the writes are about
    context: str = ""


def _is_change(word: str, extra: set[str], nxt: str = "") -> bool:
    """Whether *word* orders a write; *nxt*, the word after it: "leave a note", "drop a line" create a record."""
    w = word.lower()
    if w in ("leave", "drop") and nxt.lower() in ("a", "an"):
        return True
    return (w in u.CHANGE_VERBS or w in extra) and u.stem(w) not in u.READ_VERBS


def split_request(request: str, extra: set[str]) -> Acting | None:
    """The trigger and the write clauses of *request*, or None when no clause starts with a change verb."""
    text = u.plain_numbers(" ".join(request.strip().rstrip(".!").split()))
    lead = u.SCHEDULE_LEAD.match(text)
    if lead and lead.end() < len(text):  # "every morning log ...": the schedule is the trigger (u.when reads it)
        text = text[lead.end():]
    trigger, kind, rest = "", "none", text
    m = _TRIGGER_HEAD.match(text)
    if m:
        trigger, rest = m.group("cond").strip(), m.group("rest").strip()
        kind = m.group(1).lower().split()[0]
    else:
        t = _TRIGGER_TAIL.match(text)
        if t and any(_is_change(w, extra) for w in re.findall(r"[A-Za-z]+", t.group("rest"))[:1]):
            trigger, rest, kind = t.group("cond").strip(), t.group("rest").strip(), t.group("kw").lower().split()[0]
    kind = {"whenever": "when", "once": "when", "as": "when", "each": "when", "every": "when", "on": "when"
            }.get(kind, kind)
    clauses: list[Clause] = []
    context: list[str] = []
    for piece in _SPLIT.split(rest):
        words = re.findall(r"[A-Za-z][A-Za-z'-]*", piece)
        if not words:
            continue
        if _is_change(words[0], extra, (words[1:2] or [""])[0]):
            clauses.append(Clause(piece, words[0].lower()))
        elif words[0].lower() in ("please", "also", "just", "to") and len(words) > 1 and \
                _is_change(words[1], extra, (words[2:3] or [""])[0]):
            clauses.append(Clause(piece, words[1].lower()))
        elif words[0].lower() in ("have", "get", "let") and (k := next((j for j in range(1, min(5, len(words)))
                                                              if _is_change(words[j], extra, (words[j + 1: j + 2] or
                                                                                              [""])[0])), 0)):
            # "have the CRM raise a task", "get the ERP to mark it paid": the system named, then the write
            clauses.append(Clause(piece, words[k].lower()))
        elif clauses and (own := _OWN_CONDITION.match(piece)) and _is_change(
                own.group("verb"), extra, (re.findall(r"[A-Za-z]+", piece[own.end("verb"):])[:1] or [""])[0]):
            # "and for the ones above 1000 euros also leave a note in the CRM": a write with its own condition
            clauses.append(Clause(piece[own.start("verb"):], own.group("verb").lower(), condition=own.group("cond")))
        elif clauses:
            clauses[-1].text += f" and {piece}"
        else:
            context.append(piece)
    if not clauses:  # "orders still unpaid should each get a reminder task": the subject is what is acted on
        m = _OUGHT.search(rest)
        if m:
            context, clauses = [rest[: m.start()]], [Clause("create " + rest[m.end():].strip(), "create")]
    return Acting(trigger, kind, clauses, " ".join(context)) if clauses else None


_OWN_CONDITION = re.compile(r"^\s*(?:and\s+)?(?P<cond>(?:for|if|where|when)\s+(?:the ones?|those|they|it|orders?|"
                            r"items?|any|each|every|all)?\s*[^,;]*?(?:above|over|below|under|exceed\w*|more than|"
                            r"less than|greater than|at least|at most)\s+[\d.]+(?:\s*(?:euros?|eur|dollars?|usd|%))?)"
                            r"\s*,?\s*(?:also\s+|then\s+|please\s+)?(?P<verb>[A-Za-z]+)\b", re.IGNORECASE)

_OUGHT = re.compile(r"\b(?:should|must|shall|needs? to|ought to)\s+(?:each\s+|all\s+|also\s+|both\s+)?"
                    r"(?:get|receive|have|be given)\b", re.IGNORECASE)


# ------------------------------------------------------------------------------------------ the actions

def _action_words(action: Any) -> list[str]:
    op = action.name.split(".", 1)[-1]
    desc = re.sub(r"\(operationId [^)]*\)", "", str(action.description or ""))
    desc = re.split(r"\bof\b [A-Z]\w+/|\(The demo", desc)[0]  # not the service's own description
    enums: list[str] = []  # the kinds an action records ("note", "payment_received") say what it does too

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.get("enum") or []:
                if isinstance(v, str):
                    enums.extend(u.split_words(v))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(getattr(action, "input_schema", None) or {})
    return [u.stem(w) for w in [*u.split_words(op), *u.split_words(desc), *enums] if w not in u.FILLER and len(w) > 1]


def match_action(clause: Clause, catalog: CatalogLike, systems: set[str]) -> None:
    """The write action that does *clause*: the most words of the clause in the action's name and description
    (a related word counts less), of the system the clause names; its effect must agree with the verb's."""
    words = [u.stem(w) for w in re.findall(r"[A-Za-z][A-Za-z0-9'-]*", clause.text) if w.lower() not in u.FILLER]
    named = {s for s in systems if u.stem(s) in words or s in clause.text.lower().split()}
    wanted = verb_effect(clause.verb)
    best: tuple[float, Any, set[str]] = (0.0, None, set())
    for a in catalog.actions:
        if _is_read(a) or (named and a.system not in named):
            continue
        # a file put or a message published is named by its system or what it sends ("on the bank's server",
        # "publish an event"), not by the verb alone: "put a zero in the stock" is no SFTP upload
        if a.name.split(".", 1)[-1] in ("put", "publish") and a.system not in named and \
                not {"file", "server", "messag", "event", "topic", "queue", "inbox", "folder", "upload"} & set(words):
            continue
        aw = set(_action_words(a))
        # the thing the action's own name says it writes ("tasks" of post_tasks) outweighs words of its
        # description or enums ("payment" of an activity's kind)
        own_name = {u.stem(w) for w in u.split_words(a.name.split(".", 1)[-1])}
        got: set[str] = set()
        score = 0.0
        for w in dict.fromkeys(words):
            if w in {u.stem(s) for s in systems}:
                continue
            if w in aw:
                score, got = score + (1.5 if w in own_name else 1.0), got | {w}
            elif u.related(w) & aw:
                score, got = score + 0.6, got | {w}
        effect = action_effect(a)
        if (effect == "delete") != (wanted == "delete"):
            score -= 2.0  # "log an activity" is no delete_activities; "remove the task" no post_tasks
        if score > best[0]:
            best = (score, a, got)
    # the records the estate reads (orders, customers) say what a write is about, not what it does: a match on
    # them alone ("flag order 7 as shipped" against an endpoint that logs an activity for an order) is no match,
    # unless the action is named after them (post_activities for "log an activity")
    if best[1] is None or best[0] < 1.0:
        return
    own = {u.stem(w) for w in u.split_words(best[1].name.split(".", 1)[-1])}
    entities = {u.stem(w) for a in catalog.actions if _is_read(a)
                for w in u.split_words(a.name.split(".", 1)[-1])} - own
    # a new state the clause names ("as shipped", "to cancelled") must be what the action does ("paid" is no
    # "shipped"): a write that does something else is worse than none
    state = re.search(r"\b(?:as|to|into)\s+([a-z]+ed|paid|done|open|closed|lost|won|active|inactive)\b",
                      clause.text.lower())
    aw = set(_action_words(best[1]))
    if state and not ({u.stem(state.group(1))} | u.related(u.stem(state.group(1)))) & aw:
        return
    if best[2] - entities:
        clause.score, clause.action, clause.words = best
        clause.words |= {u.stem(clause.verb)}


# ------------------------------------------------------------------------------------------ the mapping

@dataclass
class Field:
    """One input of an action: where it goes in the params, its type, enum, whether it is required."""

    path: tuple[str, ...]  # ("body", "order_id") or ("OrderId",)
    kind: str
    schema: dict[str, Any]
    required: bool


def action_fields(action: Any) -> list[Field]:
    """The inputs of *action*, a JSON body's fields one by one (REST ``body``), in schema order."""
    schema = action.input_schema or {}
    req = set(schema.get("required") or [])
    out: list[Field] = []
    for name, ps in (schema.get("properties") or {}).items():
        ps = _unwrap(ps) or {}
        if ps.get("type") == "object" and ps.get("properties") and (ps.get("x-in") == "body" or name == "body"):
            inner = set(ps.get("required") or [])
            for sub, ss in ps["properties"].items():
                ss = _unwrap(ss) or {}
                out.append(Field((name, sub), _kind(ss), ss, name in req and sub in inner))
            continue
        out.append(Field((name,), _kind(ps), ps, name in req))
    return out


@dataclass
class Source:
    """A value the input or an earlier step gives: its template expression and the words that name it."""

    expr: str   # item.amount, steps.activity.id
    name: str
    kind: str
    words: set[str]
    rank: int   # 0 the trigger's table, 1 a joined table, 2 an earlier step's output


def _name_words(name: str) -> set[str]:
    return {u.stem(w) for w in u.split_words(name) if w}


def _score(f: Field, s: Source) -> float:
    fname = f.path[-1]
    if not (_compatible(f.kind, s.kind) or f.kind == "str"):
        return 0.0
    if re.sub(r"[^a-z0-9]", "", fname.lower()) == re.sub(r"[^a-z0-9]", "", s.name.lower()):
        return 4.0 - 0.1 * s.rank
    fw = _name_words(fname)
    score = 0.0
    for w in fw:
        if w in s.words:
            score += 1.5 if w != "id" else 0.5
        elif u.related(w) & s.words:
            score += 0.8
    if score and f.kind != s.kind and not _compatible(f.kind, s.kind):
        score -= 0.5
    return score - 0.1 * s.rank if score else 0.0


def _enum_value(f: Field, request: str) -> Any:
    words = {u.stem(w) for w in u.split_words(request)}
    best = max(f.schema["enum"], key=lambda v: len(_name_words(str(v)) & words) + 0.5 * len(
        {r for w in _name_words(str(v)) for r in u.related(w)} & words))
    return best


def _text(f: Field, clause: Clause, item: list[Source], trigger: str) -> str:
    """A required text field no column gives: the request's words and the item's identifying values."""
    ids = [s for s in item if s.rank < 2 and ((s.kind in ("int", "str") and bool({"id", "refer", "ref"} & s.words))
                                              or s.kind == "num")][:4]
    head = (trigger or clause.text).strip().rstrip(",")
    head = head[0].upper() + head[1:] if head else "Planned write"
    values = ", ".join(f"{s.name} {{{{ {s.expr} }}}}" for s in ids)
    limit = int(f.schema.get("maxLength") or 200)
    # the request's words are shortened, never the item's values: a cut template ("{{ item.or") is no template
    room = limit - len(values) - 2
    if room < 10:
        values, room = "", limit
    if len(head) > room:
        head = head[: max(room - 1, 1)].rsplit(" ", 1)[0]
    return f"{head}: {values}" if values else head


def _literal(f: Field, text: str) -> Any:
    """The new value *text* gives the field it names ("set the price to 49.90" -> price 49.90), if any."""
    words = [u.stem(w) for w in re.findall(r"[A-Za-z]+", text)]
    fw = _name_words(f.path[-1]) - {"id"}
    if not fw or not any(w in words or u.related(w) & set(words) for w in fw):
        return None
    m = re.search(r"\b(?:to|as|at|=)\s+(-?\d+(?:[.,]\d+)?)\b", text)
    if m and f.kind in ("int", "num"):
        number = float(m.group(1).replace(",", "."))
        return int(number) if f.kind == "int" and number.is_integer() else number
    return None


# ------------------------------------------------------------------------------------------------ plan

class NotAFlow(HubError):
    """The request acts, but the catalog has no write action that does it (the caller refuses it)."""


class Unplannable(NotAFlow):
    """The request acts through write actions the catalog has, but no valid flow was found (a required input
    nothing gives, no table named): refused like any write that cannot be planned, with the reason."""


class Forbidden(Refused):
    """The policy forbids the request's side effect: refused with the reason."""


def compose_flow(request: str, catalog: CatalogLike, pipelines: Sequence[Pipeline], verb: str, *,
                 name: str | None = None) -> PlanResult:
    """The flow spec of an acting *request* (see the module docstring); raises :class:`NotAFlow` when no write
    action does what it asks and :class:`Forbidden` when the policy forbids its effect."""
    extra = {w for a in catalog.actions if not _is_read(a) for w in u.split_words(a.name.split(".", 1)[-1])[:1]
             if len(w) > 2}
    acting = split_request(request, extra)
    if acting is None:
        if verb_effect(verb) == "delete":
            raise Forbidden(f"the request asks to {verb}: a destructive change (it removes or overwrites data)")
        raise NotAFlow(f"no clause of the request starts with a change the catalog's write actions make ('{verb}')")
    systems = {a.system for a in catalog.actions}
    for c in acting.clauses:
        if verb_effect(c.verb) == "delete":
            allowed = list(DEFAULT_EFFECTS)
            match_action(c, catalog, systems)
            if c.action is not None:
                allowed = allowed_effects(pipelines, c.action)
            if "delete" not in allowed:
                target = f" ({c.action.name})" if c.action is not None else ""
                raise Forbidden(f"'{c.text}' is destructive: '{c.verb}'{target} removes or overwrites data, and the "
                                f"policy allows planned flows only to {' and '.join(allowed)} (agent.flow_effects)")
        else:
            match_action(c, catalog, systems)
        if c.action is None:
            raise NotAFlow(f"no write action of the catalog does '{c.text}' (write actions: "
                           f"{', '.join(a.name for a in catalog.actions if not _is_read(a)) or 'none'})")
        effect = action_effect(c.action)
        allowed = allowed_effects(pipelines, c.action)
        if effect not in allowed:
            raise Forbidden(f"{c.action.name} {'removes or overwrites data' if effect == 'delete' else effect + 's'}"
                            f" and the policy allows planned flows only to {' and '.join(allowed)} "
                            "(agent.flow_effects)")
    return _Builder(request, acting, catalog, pipelines, name).build()


class _Builder:
    def __init__(self, request: str, acting: Acting, catalog: CatalogLike, pipelines: Sequence[Pipeline],
                 name: str | None) -> None:
        self.request, self.acting, self.catalog, self.pipelines = request, acting, catalog, pipelines
        self.res = PlanResult(request=request, backend="offline")
        self.notes = self.res.notes
        self.name = name
        self.filters: list[tuple[Table, Column, Any]] = []

    # --- the input ----------------------------------------------------------------------------------------
    def tables(self, vocab: Vocabulary, sample: dict[str, Sample]) -> tuple[Table, list[tuple[Table, str]]]:
        """The trigger's table and the tables joined to it (with their join condition)."""
        def parent(t: Table) -> Table:
            return t if t.parent is None else next((x for x in vocab.tables if x.name == t.parent), t)

        def mentioned(text: str, skip_words: set[str], event: bool = False) -> list[Table]:
            """The tables *text* names, in the order it names them; with *event*, the table its verb names
            first ("a customer pays ..." is about a payment, "the bank books money" about a booking)."""
            words = _tokenize(text)
            skip = {i for i, w in enumerate(words) if u.stem(w) in skip_words}
            r = read_request(text, vocab, skip)
            found: dict[str, tuple[float, int, Table]] = {}
            verb_at = next((i for i, w in enumerate(words) if i > 0 and (w in _EVENT_VERBS or (
                w.endswith("s") and w[:-1] in _EVENT_VERBS))), None) if event else None
            for i, (_, senses) in sorted(r.senses.items()):
                if i in skip:
                    continue
                kinds = [x for x in senses if x.table is not None and x.kind in ("table", "column", "value")]
                if i == verb_at:  # the verb names the event's record: a table it names, else a column's table
                    kinds = [x for x in kinds if x.kind == "table"] or kinds
                for sense in kinds:
                    t = parent(sense.table)  # type: ignore[arg-type]
                    w = sense.weight * {"table": 1.0, "value": 0.9}.get(sense.kind, 0.7)
                    order = -1 if i == verb_at else i
                    if i == verb_at:
                        w = max(w, 0.6)
                    old = found.get(t.name)
                    found[t.name] = (max(w, old[0]) if old else w, min(order, old[1]) if old else order, t)
            for i, (_, senses) in sorted(r.senses.items()):  # a value names the records ("the gold customers")
                values = [x for x in senses if x.kind == "value" and x.table is not None and x.column is not None]
                if i not in skip and len({(x.table.name, x.column.name) for x in values}) == 1:  # type: ignore[union-attr]
                    self.filters.append((values[0].table, values[0].column, values[0].value))  # type: ignore[arg-type]
            return [t for w, _, t in sorted(found.values(), key=lambda x: (x[1], -x[0])) if w >= 0.6]

        action_words = {w for c in self.acting.clauses for w in c.words}
        first = mentioned(self.acting.trigger, set(), event=True) if self.acting.trigger else []
        first += mentioned(self.acting.context, set()) if self.acting.context else []
        rest = [t for c in self.acting.clauses for t in mentioned(c.text, action_words)]
        # identifiers written as they are stored ("SKU-00001", "ORD-100001") name their records
        named: list[Table] = []
        for token in re.findall(r"\b[A-Za-z]{1,6}[-_#/]?\d{2,}\b", self.request):
            for t in vocab.tables:
                smp = sample.get(t.name)
                col = next((c for c in t.columns if smp and token in (smp.values.get(c.name) or [])), None)
                if col is not None:
                    named.append(parent(t))
                    self.filters.append((t, col, token))
                    break
        if not first and not rest and not named:  # the words that named the action name its records too
            rest = [t for c in self.acting.clauses for t in mentioned(c.text, {u.stem(c.verb)})]
        candidates = list({t.name: t for t in [*first, *named, *rest]}.values())
        if not candidates:
            raise Unplannable("the request names no table to act on (what the writes are about: orders, "
                              "payments, customers ...)")
        main = candidates[0]
        joined: list[tuple[Table, str]] = []
        negated = self._negated(vocab)
        #: tables the items must have no row of ("orders still waiting for their money at the bank")
        self.anti: list[tuple[Table, str, str]] = []
        for t in candidates[1:]:
            if t.name == main.name or any(t.name == j.name for j, _ in joined):
                continue
            found = None
            for other, alias in [(main, "m"), *[(j, f"j{i}") for i, (j, _) in enumerate(joined)]]:
                keys = [k for k in join_keys(other, t, sample) if k.strength >= 2]
                if keys:
                    found = (keys[0], other, alias)
                    break
            if found is None:
                self.notes.append(f"{t.name} is not joined: no key relates it to {main.name} or the tables joined")
                continue
            k, other, alias = found
            if t.name in negated:
                mine = f"x{len(self.anti)}"
                self.anti.append((t, mine, k.cond.replace("{a}", alias).replace("{b}", mine)))
                self.notes.append(f"items without a matching {t.name}: {k.note}")
                continue
            mine = f"j{len(joined)}"
            cond = k.cond.replace("{a}", alias).replace("{b}", mine)
            joined.append((t, cond))
            self.notes.append(f"join: {k.note}")
        return main, joined

    def _negated(self, vocab: Vocabulary) -> set[str]:
        """Tables the request names right after a negation or a wait ("never paid by the bank", "without a
        payment", "still waiting for their money at the bank"): the items are the rows that have none."""
        words = _tokenize(self.request)
        r = read_request(self.request, vocab, set())
        cues = set(u.negation_positions(words)) | {i for i, w in enumerate(words) if w in (
            "waiting", "awaiting", "outstanding", "owed", "unsettled", "overdue")}
        out: set[str] = set()
        for p in cues:
            for i in range(p + 1, min(len(words), p + 7)):
                senses = r.senses.get(i, (1, []))[1]
                tables = [s.table for s in senses if s.kind == "table" and s.table is not None]
                if tables:
                    out.add(tables[0].name if tables[0].parent is None else tables[0].parent)
                    break
        return out

    def input_sql(self, main: Table, joined: list[tuple[Table, str]], renames: dict[str, str],
                  sample: dict[str, Sample]) -> tuple[str, list[Source], list[str]]:
        cols: list[str] = []
        sources: list[Source] = []
        taken: set[str] = set()
        given = {c.name for t, _ in joined for c in t.columns}  # what the joined tables give themselves
        for t, alias, rank in [(main, "m", 0), *[(t, f"j{i}", 1) for i, (t, _) in enumerate(joined)]]:
            entity = (u.split_words(t.name) or [t.name])[-1]
            entity = u.stem(entity)
            for c in t.columns:
                out = c.name if c.name not in taken else f"{entity}_{c.name}"
                taken.add(out)
                cols.append(f"{alias}.{c.name}" + (f" as {out}" if out != c.name else ""))
                sources.append(Source(f"item.{out}", out, c.kind, _name_words(out) | {u.stem(e) for e in t.entity},
                                      rank))
            # identifiers in another form: a reference like ORD-100001 read as the number it carries
            smp = sample.get(t.name)
            for c in t.columns:
                vals = (smp.values.get(c.name) or []) if smp else []
                form = _affix(vals) if c.kind in ("str", "other") and not any(" " in str(v) for v in vals) \
                    else None
                if not form or not form[0]:
                    continue
                letters = re.sub(r"[^a-z]", "", form[0].lower())
                target = next((tb for tb in self.universe if tb.name != t.name and any(
                    len(letters) >= 2 and w.startswith(letters[:3]) for w in u.split_words(tb.name))), None)
                if target is None:
                    continue  # the prefix abbreviates no other table: a code, not another record's number
                ent = u.stem((u.split_words(target.name) or [""])[-1])
                out = f"{ent}_id"
                if out in taken or out in given:
                    continue  # the joined table gives that key itself
                taken.add(out)
                cols.append(f"cast(regexp_extract({alias}.{c.name}, '\\d+') as bigint) as {out}")
                sources.append(Source(f"item.{out}", out, "int", _name_words(out), rank))
                self.notes.append(f"{out}: the number in {t.name}.{c.name} ({vals[0]!r} is '{form[0]}' + a number)")
        lines = [f"select {', '.join(cols)}", f"from {renames[main.name]} m"]
        for i, (t, cond) in enumerate(joined):
            lines.append(f"join {renames[t.name]} j{i} on {cond}")
        aliases = {main.name: "m", **{t.name: f"j{i}" for i, (t, _) in enumerate(joined)}}
        where = []
        for tname, col, val in dict.fromkeys((ft.name, fc.name, fv) for ft, fc, fv in self.filters):
            if tname in aliases:
                where.append(f"{aliases[tname]}.{col} = '{str(val).replace(chr(39), chr(39) * 2)}'")
        for t, alias, cond in getattr(self, "anti", []):
            where.append(f"not exists (select 1 from {renames[t.name]} {alias} where {cond})")
        if where:
            lines.append("where " + " and ".join(where))
            self.notes.append("filter: " + " and ".join(where))
        key = [k for k in main.pk] or [c.name for c in main.columns if sample.get(main.name) and
                                      sample[main.name].rows > 1 and
                                      sample[main.name].distinct.get(c.name) == sample[main.name].rows][:1] \
            or [c.name for c in main.columns]
        return "\n".join(lines) + "\n", sources, key

    # --- the steps ----------------------------------------------------------------------------------------
    def steps(self, item: list[Source]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        earlier: list[Source] = []
        cond = self.condition(item)
        names: set[str] = set()
        for c in self.acting.clauses:
            a = c.action
            sname = re.sub(r"[^a-z0-9]+", "_", "_".join(u.split_words(a.name.split(".", 1)[-1])).lower()).strip("_")
            sname = re.sub(r"^(post|put|patch|create|add)_", "", sname) or "step"
            while sname in names:
                sname += "_2"
            names.add(sname)
            params: dict[str, Any] = {}
            used: set[str] = set()
            for f in action_fields(a):
                value = self.value(f, c, [*item, *earlier], used)
                if value is None:
                    if f.required:
                        raise Unplannable(f"{a.name} needs {'.'.join(f.path)} ({f.kind}) and neither the input "
                                       f"({', '.join(s.name for s in item)}) nor an earlier step gives it")
                    continue
                node = params
                for p in f.path[:-1]:
                    node = node.setdefault(p, {})
                node[f.path[-1]] = value
            step: dict[str, Any] = {"name": sname, "call": a.name, "params": params}
            own = self.compared(c.condition, item) if c.condition else None
            if own or cond:
                step["when"] = own or cond
            props = (a.output_schema or {}).get("properties") or {}
            if props:  # ids an answer carries feed the later steps (steps.<name>.<id>)
                outs = {k: f"$.{k}" for k in props if k in ("id",) or k.endswith("_id")}
                if outs:
                    step["output"] = outs
                    earlier += [Source(f"steps.{sname}.{k}", k, _kind(_unwrap(props[k])), _name_words(k), 2)
                                for k in outs]
            out.append(step)
            self.notes.append(f"step {sname}: {a.name} for '{c.text}' ({', '.join(sorted(c.words - {''}))})")
        return out

    def value(self, f: Field, c: Clause, pool: list[Source], used: set[str]) -> Any:
        name = f.path[-1].lower()
        if f.path == ("body",) and f.kind == "other" and not f.schema.get("properties"):
            # a message's or a file's payload: the input row itself (JSON)
            self.notes.append(f"{c.action.name} body: the input row as JSON, one message or file per item")
            return "{{ item }}"
        if f.kind == "str" and name in ("path", "filename", "file_name", "remote_path"):
            key = getattr(self, "key", [])[:1]
            stem = re.sub(r"[^a-z0-9]+", "-", getattr(self, "pname", "items").lower()).strip("-")
            return f"outbound/{stem}-{{{{ item.{key[0]} }}}}.json" if key else f"outbound/{stem}.json"
        if f.kind == "str" and name in ("routing_key", "subject", "topic"):
            entity = u.stem((u.split_words(getattr(self, "main_name", "") or "item") or ["item"])[-1])
            sep = "/" if name == "topic" else "."
            return f"{entity}{sep}{u.stem(c.verb)}"
        if f.kind == "str" and (_FREE_TEXT & _name_words(f.path[-1]) or int(f.schema.get("maxLength") or 0) >= 100):
            return _text(f, c, pool, self.acting.trigger)  # a free text: written, not copied from a column
        if f.schema.get("enum"):
            v = _enum_value(f, self.request)
            named = _name_words(str(v)) & {u.stem(w) for w in u.split_words(self.request)}
            self.notes.append(f"{c.action.name} {'.'.join(f.path)}: '{v}' of {f.schema['enum']}"
                              + ("" if named else " (no word of the request names one: the first; check it)"))
            return v
        literal = _literal(f, c.text)
        if literal is not None:
            self.notes.append(f"{c.action.name} {'.'.join(f.path)}: {literal!r}, the value the request gives")
            return literal
        ranked = sorted(((_score(f, s), s) for s in pool if s.expr not in used), key=lambda x: -x[0])
        if ranked and ranked[0][0] >= (1.4 if f.required else 3.0):
            s = ranked[0][1]
            used.add(s.expr)
            if f.kind == "str" and s.kind not in ("str", "other"):
                return f"{{{{ {s.expr} | string }}}}"  # a number or date sent as the text the target takes
            return f"{{{{ {s.expr} }}}}"
        if f.required and f.kind == "str":
            return _text(f, c, pool, self.acting.trigger)
        return None

    def condition(self, item: list[Source]) -> str | None:
        """A comparison of the "if" clause: a column against a number or against another table's measure."""
        if self.acting.kind != "if" or not self.acting.trigger:
            return None
        return self.compared(self.acting.trigger, item)

    def compared(self, text: str, item: list[Source]) -> str | None:
        """*text*'s comparison ("more than 1000", "above the order's amount") as a condition on the item."""
        text = u.plain_numbers(text.lower())
        m = re.search(r"\b(?:(more|greater|higher|bigger|larger|less|lower|smaller|fewer)\s+than|"
                      r"(above|over|exceeding|exceeds|below|under))\s+(?:an?\s+|the\s+)?([a-z0-9.,]+)", text)
        if not m:
            return None
        word = m.group(1) or m.group(2)
        op = ">" if word in ("more", "greater", "higher", "bigger", "larger", "above", "over", "exceeding",
                             "exceeds") else "<"
        measures = [s for s in item if s.rank < 2 and s.kind in ("num", "int") and not ({"id"} & s.words)]
        if not measures:
            return None
        left = measures[0]
        other = m.group(3)
        if re.fullmatch(r"[\d.,]+", other):
            self.notes.append(f"condition: {left.name} {op} {other}")
            return f"{left.expr} {op} {other.replace(',', '')}"
        ow = u.stem(other)
        right = next((s for s in measures[1:] if ow in s.words or u.related(ow) & s.words), None)
        if right is None:
            return None
        self.notes.append(f"condition: {left.name} {op} {right.name} ('{text}')")
        return f"{left.expr} {op} {right.expr}"

    # --- the spec -----------------------------------------------------------------------------------------
    def build(self) -> PlanResult:
        self.universe = universe(self.catalog, self.pipelines)
        sample = samples(self.catalog, self.pipelines, self.universe)
        tables = [t for t in self.universe if not sample or t.name in sample]
        vocab = Vocabulary(tables, sample, {a.system for a in self.catalog.actions})
        main, joined = self.tables(vocab, sample)
        roots = [main, *[t for t, _ in joined], *[t for t, _, _ in self.anti]]
        first_op = self.acting.clauses[0].action.name.split(".", 1)[-1]
        pname = self.name or re.sub(r"[^a-z0-9_]+", "_", "_".join(u.split_words(first_op)).lower()) + "_flow"
        taken = {a for p in self.pipelines for a in p.asset_names()}
        renames = {t.name: (t.name if t.name not in taken else f"{pname}_{t.name}") for t in roots}
        sql, item, key = self.input_sql(main, joined, renames, sample)
        self.key, self.main_name, self.pname = key, main.name, pname
        steps = self.steps(item)
        spec: dict[str, Any] = {"pipeline": pname, "description": self.request.strip()}
        when = u.when(self.request)
        if any(t.partitioned for t in roots):
            tmpl = next((t.template[0] for t in roots if t.template and t.template[0].spec.partitions), None)
            if tmpl is not None and tmpl.spec.partitions is not None:
                start, tz = tmpl.spec.partitions.window.start, tmpl.spec.partitions.window.timezone
            else:
                start, tz = date.today() - timedelta(days=30), "UTC"
            spec["partitions"] = {"daily": {"start": start.isoformat(), "timezone": tz}}
        else:
            spec["partitions"] = "none"
        spec["systems"] = {}
        for sysname in [*(t.system for t in roots), *(c.action.system for c in self.acting.clauses)]:
            if sysname not in spec["systems"]:
                raw = system_raw(sysname, self.pipelines)
                if raw is None:
                    raise NotAFlow(f"system '{sysname}' is in none of the given specs")
                spec["systems"][sysname] = raw
        spec["sources"] = {}
        for t in roots:
            raw = copy.deepcopy(t.raw)
            raw.pop("children", None)
            spec["sources"][renames[t.name]] = raw
        trigger: dict[str, Any]
        if self.acting.trigger:
            stream = main.template is not None and main.template[0].sources[main.template[1]].stream is not None
            trigger = {"events" if stream else "after": renames[main.name]}
            self.notes.append(f"trigger: new rows of {main.name} ('{self.acting.trigger}')")
            if not stream and main.partitioned:  # a flow after a partitioned table runs per partition
                part = "m._hub_partition = '{{ partition.key }}'"
                sql = sql.replace("\nwhere ", f"\nwhere {part} and ", 1) if "\nwhere " in sql else \
                    f"{sql}where {part}\n"
                self.notes.append(f"input: the partition's rows of {main.name} ({part})")
        elif when.schedule:
            trigger = {"schedule": when.schedule}
            self.notes.append(f"trigger: schedule {when.schedule}")
        else:
            trigger = {"manual": True}
            self.notes.append("trigger: manual (the request names no event or time)")
        fname = pname if pname not in taken and pname not in spec["sources"] else f"{pname}_run"
        flow: dict[str, Any] = {
            "description": f"Planned for: {self.request.strip()}",
            "planned_by": f"hub agent plan ({self.request.strip()[:160]})",
            "approved": False,
            "trigger": trigger,
            "input": {"sql": sql, "key": key},
            "steps": steps,
        }
        spec["flows"] = {fname: flow}
        self.res.flow = fname
        self.res.result_table = fname
        self.res.actions = [t.action for t in roots] + [c.action.name for c in self.acting.clauses]
        self.notes.insert(0, "writes: " + ", ".join(f"{c.action.name} ({c.action.system})" for c in self.acting.clauses)
                          + "; input: " + ", ".join(f"{t.action} ({t.system})" for t in roots))
        self.notes.append(f"approval: the flow is approved: false; it runs only with `hub flow run {fname} --approve`")
        self.res.spec_text = dump_spec(spec, self.request, self.notes)
        return self.res


# ------------------------------------------------------------------------------------------ validation

def _target(action: Any) -> str:
    from hub.agent.approvals import target_of

    return f"{action.system}: {target_of(action)}"


def validate_flow(res: PlanResult, pipelines: Sequence[Pipeline], catalog: CatalogLike, *, path: Path,
                  partition: str | None = None, warehouse: Path | None = None, run: bool = True) -> None:
    """Check a planned flow: the spec loads (every flow check), its calls fit the live actions
    (:func:`hub.flows.check.check_actions`), one partition of its input is materialized and the flow is
    dry-run over it: the exact requests it would send, each validated against the action's schema, nothing
    sent. With no input row in that partition, one item is made of the columns' sample values, so every write
    still shows a sample request. Problems go to ``res.errors``; the writes to ``res.writes``."""
    from hub.agent.planner import _partition, dry_run
    from hub.flows.check import check_actions
    from hub.flows.engine import FlowRun
    from hub.runs import flow_window

    text = res.spec_text or ""
    try:
        pipeline = loads(text, path)
    except SpecError as exc:
        res.errors += list(exc.problems)
        return
    problems, notes = check_actions(pipeline, catalog)  # type: ignore[arg-type]
    res.errors += [str(p) for p in problems]
    res.notes += notes
    if res.errors or not run:
        return
    with tempfile.TemporaryDirectory(prefix="hub-flowplan-") as tmp:
        wh = warehouse or Path(tmp) / "dry_run.duckdb"
        found, counts, key = dry_run(text, path, partition=partition, warehouse=wh)
        res.dry_run, res.partition = counts, key
        if found:
            res.errors += found
            return
        data = yaml.safe_load(text)
        data["warehouse"] = f"duckdb:///{wh}"
        planned = loads(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), path)
        flow = res.flow or next(iter(planned.spec.flows))
        runner = FlowRun(planned, flow, dry_run=True, catalog=catalog,  # type: ignore[arg-type]
                         window=flow_window(planned, flow, key)[0])
        rows = runner.items()
        source = f"partition {key or '(unpartitioned)'}"
        first = _partition(planned, None)
        if not rows and first is not None and first != key:  # another partition may have rows that join
            wh2 = Path(tmp) / "first_partition.duckdb"
            found, _, _ = dry_run(text, path, partition=first, warehouse=wh2)
            data["warehouse"] = f"duckdb:///{wh2}"
            other = FlowRun(loads(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), path), flow,
                            dry_run=True, catalog=catalog,  # type: ignore[arg-type]
                            window=flow_window(planned, flow, first)[0])
            more = [] if found else other.items()
            if more:
                runner, rows = other, more
                source = f"partition {first} (partition {key} has no input row)"
        if not rows:
            one = _sample_item(wh, str(planned.spec.flows[flow].input.sql))
            if one is None:
                res.errors.append(f"dry run of flow {flow}: the input tables are empty in partition "
                                  f"{key or '(unpartitioned)'}: no sample request can be shown (try --partition)")
                return
            rows = [one]
            source = (f"a sample row (partition {key or '(unpartitioned)'} has no input row: the first row of each "
                      "table, not joined)")
            runner.items = lambda: rows  # type: ignore[method-assign]
        report = runner.run()
        res.dry_run[flow] = len(rows)
        done = {p.step for p in report.planned}
        steps = [st for st in planned.spec.flows[flow].steps if st.call]
        if rows and any(st.name not in done for st in steps) and any(st.when for st in steps):
            # no item met a step's condition: its sample request is shown for the first item, condition aside
            for st in data["flows"][flow]["steps"]:
                st.pop("when", None)
            loose = FlowRun(loads(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), path), flow,
                            dry_run=True, catalog=catalog,  # type: ignore[arg-type]
                            window=runner.window)
            loose.items = lambda: rows[:1]  # type: ignore[method-assign]
            extra = [p for p in loose.run().planned if p.step not in done]
            report.planned += extra
            res.notes += [f"step {p.step}: no item of {source} met its condition; its sample request is the first "
                          "item's, the condition aside" for p in extra]
    failed = [i for i in report.items if i.error]
    res.errors += [f"dry run of flow {flow}: item {i.key}: {i.error}" for i in failed]
    seen: set[str] = set()
    for p in report.planned:
        action = catalog.get(p.action)
        res.writes.append({"step": p.step, "action": p.action, "target": _target(action),
                           "effect": action_effect(action), "item": p.item_key, "request": p.request,
                           "ledger": p.ledger, "sample": p.step not in seen, "from": source})
        seen.add(p.step)
    res.notes.append(f"dry run of flow {flow}: {len(rows)} item(s) from {source}, {len(report.planned)} request(s) "
                     "validated against the targets' schemas; nothing was sent")
    if not report.planned and not failed:
        res.notes.append("no item met the steps' conditions: no request to show")


def _sample_item(wh: Path, sql: str) -> dict[str, Any] | None:
    """One input row when the partition's rows do not join: the input query with its join conditions dropped
    (the first row of each table, not related to each other), so every write still shows a sample request
    made of real values."""
    import duckdb

    loose = re.sub(r"^(join \S+ j\d+) on .*$", r"\1 on true", sql, flags=re.M)
    loose = re.sub(r"m\._hub_partition = '\{\{ partition\.key \}\}'", "true", loose) + " limit 1"
    with duckdb.connect(str(wh), read_only=True) as con:
        rel = con.sql(loose)
        got = rel.fetchall()
        return dict(zip(rel.columns, got[0], strict=True)) if got else None


def describe_writes(res: PlanResult) -> list[str]:
    """One line per write step (target, effect) and its sample request: what `hub agent plan` prints."""
    import json

    lines = []
    for w in res.writes:
        if not w["sample"]:
            continue
        lines.append(f"write {w['step']}: {w['action']} -> {w['target']} ({w['effect']}); sample request "
                     f"({w['item']}): {json.dumps(w['request'], sort_keys=True, default=str)}")
    return lines


__all__ = ["DESTRUCTIVE", "Forbidden", "NotAFlow", "Unplannable", "action_effect", "compose_flow", "describe_writes",
           "split_request", "validate_flow", "verb_effect"]
