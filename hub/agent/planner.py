"""The planner: a natural-language request -> a pipeline spec (YAML in the hub's format), validated and
dry-run before anything is written.

Two backends share :func:`plan`:

* ``offline`` (default, no model): retrieval of the catalog's actions matching the request
  (:meth:`Catalog.search`) and schema-directed composition — join keys from matching field names and
  types across the chosen actions' output schemas (``orders.customer_id`` <-> ``customers.id``),
  aggregations and filters from simple request parsing, time words mapped to partitions and a schedule.
* ``llm``: any OpenAI-compatible chat-completions endpoint with tool calling (:mod:`hub.agent.llm`).

Every plan goes through :func:`validate_plan`: the spec loads (:func:`hub.spec.loads`), each source is a
read action of the catalog, its parameters type-check against the action's input schema, the model SQL
parses (DuckDB dialect) and reads only the planned tables and their columns, and one partition is
materialized into a temporary DuckDB warehouse on an ephemeral Dagster instance. Write requests are refused.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from hub import protocols
from hub.errors import HubError, SpecError
from hub.spec import Pipeline, loads

Backend = Literal["offline", "llm"]

WRITE_WORDS = ("create", "update", "delete", "send", "insert", "remove", "upload", "modify", "write", "post",
               "push", "cancel", "refund", "pay", "submit", "overwrite", "truncate", "purge")
_WRITE_RE = re.compile(r"\b(" + "|".join(WRITE_WORDS) + r")\b", re.IGNORECASE)
_STOP = {"get", "list", "api", "the", "all", "read", "fetch", "search", "by", "of", "a", "an", "and", "or",
         "to", "for", "from", "in", "on", "with", "me", "give", "load", "show", "every", "each", "per", "csv",
         "outbox", "public", "id", "data", "record", "records", "table", "file", "files"}
_SYNONYMS = {"payment": {"statement"}, "revenue": {"order"}, "sale": {"order"}, "stock": {"level"},
             "client": {"customer"}, "interaction": {"contact"}, "line": {"line"}, "booking": {"statement"},
             "transaction": {"statement"}, "item": {"line"}}
_MEASURE_SYNONYMS = {"revenue": ["revenue", "amount", "total", "price"], "sale": ["amount"], "turnover": ["amount"],
                     "value": ["amount", "value"], "amount": ["amount"], "spend": ["amount"],
                     "duration": ["duration_minutes", "duration"], "score": ["score"], "quantity": ["quantity"],
                     "stock": ["quantity"], "unit": ["quantity"]}


class ActionLike(Protocol):
    name: str
    system: str
    protocol: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    side_effect: str
    binding: dict[str, Any]


class CatalogLike(Protocol):
    @property
    def actions(self) -> Sequence[Any]: ...

    def get(self, name: str) -> Any: ...

    def search(self, query: str, limit: int = 10) -> list[Any]: ...


@dataclass
class PlanResult:
    """What :func:`plan` produced: the spec text (None when refused/rejected), notes and the validation."""

    request: str
    backend: str
    spec_text: str | None = None
    ok: bool = False
    refused: bool = False
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    result_table: str | None = None  # the table that answers the request (the model, else the source)
    dry_run: dict[str, int] = field(default_factory=dict)  # asset -> rows materialized in the dry run
    partition: str | None = None  # the partition of the dry run
    attempts: int = 1

    @property
    def reason(self) -> str:
        return "; ".join(self.errors)


class ModelBackend(Protocol):
    """A planner backend that asks a model (:class:`hub.agent.llm.LLMConfig`); given to :func:`plan`, so this
    module never imports the one that builds on it."""

    def plan(self, request: str, pipelines: list[Pipeline], catalog: CatalogLike, *, name: str | None = None,
             path: Path | None = None, dry_run: bool = True, partition: str | None = None,
             warehouse: Path | None = None) -> PlanResult: ...


# ---------------------------------------------------------------------------------------------- helpers

def _stem(word: str) -> str:
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def tokens(text: str) -> list[str]:
    """Lower-case word stems, camelCase and snake_case split."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [_stem(t) for t in re.split(r"[^A-Za-z0-9]+", text) if t]


def write_intent(request: str) -> str | None:
    """The write verb of a request asking to change something in a system, if any."""
    m = _WRITE_RE.search(request)
    return m.group(1).lower() if m else None


def _is_read(action: Any) -> bool:
    return getattr(action, "side_effect", "read") == "read"


def _unwrap(schema: Any) -> dict[str, Any] | None:
    """The non-null branch of ``anyOf``/``oneOf`` (nullable fields), else the schema itself."""
    if not isinstance(schema, dict):
        return None
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            for b in branches:
                if isinstance(b, dict) and b.get("type") != "null":
                    return _unwrap(b)
    return schema


def _schema_at(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node = _unwrap(schema)
    for part in path.split("."):
        if node is None:
            return None
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            node = _unwrap(node["items"])
            if node is None:
                return None
        props = node.get("properties") or {}
        node = _unwrap(props.get(part))
    return node


def _kind(schema: dict[str, Any] | None, declared: str | None = None) -> str:
    """A coarse type for join matching and measures: int, num, str, time, bool, other."""
    t = (declared or "").lower()
    if t:
        if t.startswith(("int", "bigint")):
            return "int"
        if t.startswith(("float", "double", "decimal")):
            return "num"
        if t.startswith(("timestamp", "date", "time")):
            return "time"
        if t == "bool":
            return "bool"
        return "str"
    schema = _unwrap(schema)
    if not schema:
        return "other"
    st = schema.get("type")
    if isinstance(st, list):
        st = next((x for x in st if x != "null"), None)
    if st == "integer":
        return "int"
    if st == "number":
        return "num"
    if st == "boolean":
        return "bool"
    if st == "string":
        fmt = schema.get("format", "")
        if fmt in ("date", "date-time", "time"):
            return "time"
        if fmt in ("decimal",):
            return "num"
        return "str"
    return "other"


def _compatible(a: str, b: str) -> bool:
    numeric = {"int", "num"}
    return a == b or (a in numeric and b in numeric) or "other" in (a, b)


@dataclass
class Column:
    name: str
    kind: str
    enum: list[Any] = field(default_factory=list)


@dataclass
class Table:
    """A planned table (a source or one of its child tables) with the columns it will have."""

    name: str
    action: str
    system: str
    entity: set[str]
    columns: list[Column]
    partitioned: bool = False
    raw: dict[str, Any] = field(default_factory=dict)  # the source's YAML
    template: tuple[Pipeline, str] | None = None
    parent: str | None = None
    pk: list[str] = field(default_factory=list)

    def col(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name.lower() == name.lower()), None)


# --------------------------------------------------------------------------------------- templates

def _raw_spec(pipeline: Pipeline) -> dict[str, Any]:
    try:
        data = yaml.safe_load(pipeline.path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return data
    except OSError:
        pass
    return pipeline.spec.model_dump(mode="json", exclude_unset=True, by_alias=True)


def _binding_matches(action: Any, pipeline: Pipeline, name: str) -> bool:
    src = pipeline.sources[name]
    b = action.binding or {}
    if src.system_name != action.system:
        return False
    return src.protocol.reads_action(src, b)


def find_template(action: Any, pipelines: Sequence[Pipeline]) -> tuple[Pipeline, str] | None:
    """The source of a given pipeline that reads *action* (a known-good configuration to start from)."""
    for p in pipelines:
        for name in p.sources:
            if _binding_matches(action, p, name):
                return p, name
    return None


def system_raw(system: str, pipelines: Sequence[Pipeline]) -> dict[str, Any] | None:
    for p in pipelines:
        if system in p.spec.systems:
            raw = _raw_spec(p).get("systems", {}).get(system)
            if isinstance(raw, dict):
                return raw
    return None


def source_for(action: Any, pipelines: Sequence[Pipeline]) -> tuple[str, dict[str, Any], tuple[Pipeline, str] | None]:
    """(table name, source YAML, template) for reading *action*: the template's source when a given pipeline
    already reads it, else one built from the action's binding with time parameters mapped to the partition."""
    tmpl = find_template(action, pipelines)
    if tmpl is not None:
        p, name = tmpl
        raw = dict(_raw_spec(p).get("sources", {}).get(name) or {})
        raw.pop("sensor", None)
        return name, raw, tmpl
    b = dict(action.binding or {})
    name = re.sub(r"[^A-Za-z0-9_]", "_", action.name).strip("_").lower() or "source"
    if not name.startswith(action.system):
        name = f"{action.system}_{name}"
    params = {k: v for k, v in time_params(action.input_schema).items()}
    src: dict[str, Any] = {"system": action.system, "description": action.description or None}
    planned = protocols.get(action.protocol).plan_source(b, params) if action.protocol in protocols.registry() \
        else None
    src.update(planned or {})
    return name, {k: v for k, v in src.items() if v is not None}, None


_START = re.compile(r"(^|_)(from|since|start|begin|after)", re.IGNORECASE)
_END = re.compile(r"(^|_)(to|until|end|before)", re.IGNORECASE)


def time_params(input_schema: dict[str, Any]) -> dict[str, str]:
    """Input parameters that bound a time window, mapped to the partition's start and end."""
    out: dict[str, str] = {}
    for pname, ps in (input_schema.get("properties") or {}).items():
        kind = _kind(ps if isinstance(ps, dict) else None)
        snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", pname)
        if kind not in ("time", "str", "other"):
            continue
        if _START.search(snake) and (kind == "time" or re.search(r"date|time|since", snake, re.I)):
            out[pname] = "{{ partition.start }}"
        elif _END.search(snake) and (kind == "time" or re.search(r"date|time|until", snake, re.I)):
            out[pname] = "{{ partition.end }}"
    return out


def _is_templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value and "partition" in value


def _params_of(raw: dict[str, Any]) -> dict[str, Any]:
    if isinstance(raw.get("request"), dict):
        return dict(raw["request"].get("params") or {})
    return dict(raw.get("params") or {})


def table_for(action: Any, pipelines: Sequence[Pipeline], with_children: Iterable[str] = ()) -> list[Table]:
    """The planned table(s) of reading *action*: the source, plus the child tables asked for."""
    name, raw, tmpl = source_for(action, pipelines)
    schema = action.output_schema or {}
    entity = {t for t in tokens(" ".join([action.name, name, *(str(v) for v in (action.binding or {}).values())]))
              if t not in _STOP and t != action.system}
    enums: dict[str, list[Any]] = {}
    for col, rule in (raw.get("rules") or {}).items():
        if isinstance(rule, dict) and isinstance(rule.get("in"), list):
            enums[col] = rule["in"]
    columns: list[Column] = []
    if raw.get("columns"):
        for path, spec in raw["columns"].items():
            cname = spec if isinstance(spec, str) else (spec or {}).get("name") or path.split(".")[-1]
            declared = None if isinstance(spec, str) else (spec or {}).get("type")
            ps = _schema_at(schema, path) or _schema_at(schema, cname)
            enum = enums.get(cname) or (ps or {}).get("enum") or []
            columns.append(Column(cname, _kind(ps, declared), list(enum)))
    else:
        props = schema.get("properties") or {}
        select = raw.get("select")
        for pname, ps in props.items():
            if select and pname not in select:
                continue
            ps = _unwrap(ps) or {}
            columns.append(Column(pname, _kind(ps), list(enums.get(pname) or ps.get("enum") or [])))
    partitioned = raw.get("partitioned", any(_is_templated(v) for v in _params_of(raw).values()))
    pk = raw.get("primary_key") or []
    pk = [pk] if isinstance(pk, str) else list(pk)
    out = [Table(name, action.name, action.system, entity, columns, bool(partitioned), raw, tmpl, pk=pk)]
    children = raw.pop("children", None) or {}
    wanted = set(with_children)
    kept: dict[str, Any] = {}
    for cname, child in children.items():
        ctoks = {t for t in tokens(cname) if t not in _STOP and t != action.system} - entity
        if not (ctoks & wanted):
            continue
        kept[cname] = child
        ccols = [Column(k, next((c.kind for c in columns if c.name == k), "other")) for k in pk]
        for path, spec in (child.get("columns") or {}).items():
            ccname = spec if isinstance(spec, str) else (spec or {}).get("name") or path.split(".")[-1]
            ps = _schema_at(schema, f"{child.get('path', '')}.{path}")
            ccols.append(Column(ccname, _kind(ps, None if isinstance(spec, str) else (spec or {}).get("type"))))
        out.append(Table(cname, action.name, action.system, ctoks | entity, ccols, bool(partitioned), {}, tmpl,
                         parent=name, pk=pk))
    if kept:
        raw["children"] = kept
    return out


# ------------------------------------------------------------------------------------ offline planner

@dataclass
class _Intent:
    agg: str | None = None  # sum | count | avg | min | max
    measure_words: list[str] = field(default_factory=list)
    group_words: list[str] = field(default_factory=list)
    filters: list[tuple[str, str, str]] = field(default_factory=list)  # (column word, op, value)
    negated: set[str] = field(default_factory=set)
    partitions: str | None = None  # daily | monthly
    schedule: str | None = None
    window_note: str | None = None


_GROUP_STOP = {"of", "the", "from", "where", "with", "and", "in", "for", "on", "at", "over", "under", "whose",
               "having", "excluding", "except", "without", "every", "each", "a", "an", "to", "as", "is"}


def parse_request(request: str, skip: Iterable[str] = ()) -> _Intent:
    """Aggregation, grouping, filters and time words of a request (*skip*: words that are no column, such as
    system names)."""
    skip = set(skip)
    text = request.lower()
    it = _Intent()
    if re.search(r"\b(how many|number of|count)\b", text):
        it.agg = "count"
    if re.search(r"\b(average|avg|mean)\b", text):
        it.agg = "avg"
    elif re.search(r"\b(total|sum|revenue|turnover|sales)\b", text):
        it.agg = "sum"
    elif re.search(r"\b(maximum|max|largest|highest)\b", text):
        it.agg = "max"
    elif re.search(r"\b(minimum|min|smallest|lowest)\b", text):
        it.agg = "min"
    for m in re.finditer(r"\b(?:total|sum of|sum|average|avg|mean|maximum|max|minimum|min|highest|lowest)"
                         r"\s+(?:of\s+)?(?:the\s+)?([a-z_]+)", text):
        it.measure_words.append(_stem(m.group(1)))
    for word in ("revenue", "turnover", "sales", "amount", "quantity", "duration", "score", "value", "stock"):
        if re.search(rf"\b{word}\b", text):
            it.measure_words.append(_stem(word))
    for m in re.finditer(r"\b(?:per|by|for each|grouped by|broken down by)\s+((?:[a-z_']+\s*){1,3})", text):
        words: list[str] = []
        for word in m.group(1).split():
            if word in _GROUP_STOP:
                break
            words.append(word)
        words = [w for w in words if w not in skip] or words
        if not words:
            continue
        w = _stem(words[-1].removesuffix("'s"))
        if w not in ("morning", "night", "hour", "evening", "run"):
            it.group_words.append(w)
    for m in re.finditer(r"\b(?:where|with|whose|having)\s+(?:the\s+)?([a-z_]+)\s+(?:is not|isn't|!=|<>)\s+"
                         r"'?([a-z0-9_.-]+)", text):
        it.filters.append((m.group(1), "<>", m.group(2)))
    for m in re.finditer(r"\b(?:where|with|whose|having)\s+(?:the\s+)?([a-z_]+)\s+(?:is|=|equals|of)\s+"
                         r"(?!not\b)'?([a-z0-9_.-]+)", text):
        it.filters.append((m.group(1), "=", m.group(2)))
    for m in re.finditer(r"\b([a-z_]+)\s+(?:over|above|greater than|more than|at least|>=|>)\s+([0-9]+(?:\.[0-9]+)?)",
                         text):
        op = ">=" if "at least" in m.group(0) or ">=" in m.group(0) else ">"
        it.filters.append((m.group(1), op, m.group(2)))
    for m in re.finditer(r"\b([a-z_]+)\s+(?:under|below|less than|at most|<=|<)\s+([0-9]+(?:\.[0-9]+)?)", text):
        op = "<=" if "at most" in m.group(0) or "<=" in m.group(0) else "<"
        it.filters.append((m.group(1), op, m.group(2)))
    for m in re.finditer(r"\b(?:not|excluding|except|without|non-|other than)\s*([a-z_]+)", text):
        it.negated.add(m.group(1))
    if re.search(r"\b(month|monthly)\b", text) and not re.search(r"\b(per|by) month\b", text):
        it.partitions = "monthly"
    elif re.search(r"\b(yesterday|today|daily|every day|each day|every morning|every night|nightly|last week|"
                   r"past week|last 7 days|day|days|morning)\b", text):
        it.partitions = "daily"
    if re.search(r"\b(last week|past week|last 7 days)\b", text):
        it.window_note = "last week: run the last 7 daily partitions (hub run SPEC --from D-7 --to D-1)"
    elif "yesterday" in text:
        it.window_note = "yesterday: each run loads the latest complete daily partition (the day before)"
    hour = re.search(r"\bat\s+(\d{1,2})(?::(\d\d))?\s*(am|pm)?\b", text)
    h = None
    if hour:
        h = int(hour.group(1)) % 24 + (12 if hour.group(3) == "pm" and int(hour.group(1)) < 12 else 0)
    if re.search(r"\b(every|each) morning\b", text):
        it.schedule = f"0 {h if h is not None else 6} * * *"
    elif re.search(r"\b(every|each) (night|evening)\b|\bnightly\b", text):
        it.schedule = f"0 {h if h is not None else 2} * * *"
    elif re.search(r"\b(every|each) (week|monday)\b|\bweekly\b", text):
        it.schedule = f"0 {h if h is not None else 6} * * 1"
    elif re.search(r"\b(every|each) month\b|\bmonthly\b", text):
        it.schedule = f"0 {h if h is not None else 6} 1 * *"
    elif re.search(r"\b(every|each) day\b|\bdaily\b", text):
        it.schedule = f"0 {h if h is not None else 6} * * *"
    return it


def _entity_words(action: Any, pipelines: Sequence[Pipeline]) -> set[str]:
    """The words that name what *action* reads: its name, the names in its binding (a path, an operation, a
    table; not a whole query document) and the spec source that reads it, without stop words and without
    system names (a request's "CRM" picks the crm system's actions, not another
    system's source that happens to be called crm_products)."""
    systems = {s for p in pipelines for s in p.spec.systems} | {action.system}
    names = [str(v) for v in (action.binding or {}).values() if not any(c.isspace() for c in str(v))]  # no documents
    ent = {t for t in tokens(" ".join([action.name, *names])) if t not in _STOP and t not in systems}
    tmpl = find_template(action, pipelines)
    if tmpl:
        ent |= {t for t in tokens(tmpl[1]) if t not in _STOP and t not in systems}
    return ent


def _score(action: Any, req: set[str], pipelines: Sequence[Pipeline]) -> float:
    ent = _entity_words(action, pipelines)
    tmpl = find_template(action, pipelines)
    expanded = req | {s for w in req for s in _SYNONYMS.get(w, ())}
    hits = len(ent & req) + 0.6 * len(ent & (expanded - req))
    if not hits:
        return 0.0
    return hits + (0.5 if action.system in req else 0) + (0.3 if tmpl else 0) - 0.05 * len(ent - expanded)


def _pick_actions(request: str, catalog: CatalogLike, pipelines: Sequence[Pipeline]) -> list[Any]:
    req = set(tokens(request))
    candidates = list(catalog.search(request, limit=15))
    seen = {a.name for a in candidates}
    candidates += [a for a in catalog.actions if a.name not in seen]  # search ranks; scoring decides
    scored = [(s, i, a) for i, a in enumerate(candidates) if _is_read(a) and (s := _score(a, req, pipelines)) > 0]
    scored.sort(key=lambda x: (-x[0], x[1]))
    chosen: list[Any] = []
    covered: set[str] = set()
    expanded = req | {s for w in req for s in _SYNONYMS.get(w, ())}
    for _s, _i, a in scored:
        ent = _entity_words(a, pipelines)
        tmpl = find_template(a, pipelines)
        new = (ent & expanded) - covered
        if not new:
            continue
        # an action that needs inputs nobody can give (an id) is no list to load
        required = set(a.input_schema.get("required") or [])
        if required - set(time_params(a.input_schema)) and not tmpl:
            continue
        chosen.append(a)
        covered |= ent & expanded
    # keep the order in which the request names them
    words = tokens(request)

    def first_mention(a: Any) -> int:
        ent = set(tokens(a.name)) | ({t for t in tokens(find_template(a, pipelines)[1])}  # type: ignore[index]
                                     if find_template(a, pipelines) else set())
        pos = [i for i, w in enumerate(words) if w in ent or any(s in ent for s in _SYNONYMS.get(w, ()))]
        return min(pos) if pos else len(words)

    chosen.sort(key=first_mention)
    return chosen


def infer_join(a: Table, b: Table) -> tuple[str, str] | None:
    """(column of a, column of b) that relate the two tables: the parent key of a child table, a foreign key
    named after the other table's entity (``customer_id`` <-> ``customers.id``), or the same ``*_id`` name."""
    if b.parent == a.name or a.parent == b.name:
        parent, child = (a, b) if b.parent == a.name else (b, a)
        key = next((c.name for c in child.columns if parent.col(c.name)), None)
        if key:
            return key, key
    for x, y, flip in ((a, b, False), (b, a, True)):
        yid = y.col("id")
        if yid is None:
            continue
        for ent in y.entity:
            xc = x.col(f"{ent}_id")
            if xc is not None and _compatible(xc.kind, yid.kind):
                return (yid.name, xc.name) if flip else (xc.name, yid.name)
    for c in a.columns:
        if c.name.lower().endswith("_id"):
            d = b.col(c.name)
            if d is not None and _compatible(c.kind, d.kind):
                return c.name, d.name
    # a business key one side keys on (``sku`` of stock levels keyed by warehouse and sku)
    keys = {k.lower() for k in (*a.pk, *b.pk)} - {"id"}
    for c in a.columns:
        d = b.col(c.name)
        if c.name.lower() in keys and d is not None and _compatible(c.kind, d.kind) and c.kind in ("int", "str"):
            return c.name, d.name
    return None


def _alias(name: str, used: set[str]) -> str:
    parts = [p for p in name.split("_") if p]
    base = "".join(p[0] for p in parts[1:] or parts) or "t"
    alias, i = base, 2
    while alias in used or alias in ("as", "on", "or", "by", "in", "is", "to", "do"):
        alias, i = f"{base}{i}", i + 1
    used.add(alias)
    return alias


def _lit(value: str, kind: str) -> str:
    if kind in ("int", "num") and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    return "'" + value.replace("'", "''") + "'"


def _find_col(word: str, tables: list[Table], prefer: Table | None = None, exact_only: bool | None = None
              ) -> tuple[Table, Column] | None:
    order = ([prefer] if prefer else []) + [t for t in tables if t is not prefer]
    for exact in (True, False) if exact_only is None else (exact_only,):
        for t in order:
            for c in t.columns:
                n = c.name.lower()
                if (exact and (n == word or _stem(n) == word)) or \
                        (not exact and (n.startswith(word + "_") or n.endswith("_" + word))):
                    return t, c
    return None


def compose(request: str, catalog: CatalogLike, pipelines: Sequence[Pipeline], *, name: str | None = None
            ) -> PlanResult:
    """The offline planner's composition (no validation)."""
    res = PlanResult(request=request, backend="offline")
    verb = write_intent(request)
    if verb:
        res.refused = True
        res.errors.append(f"the request asks to {verb} something in a system; plans only read "
                          "(sources never write), so nothing was planned")
        return res
    it = parse_request(request, {a.system for a in catalog.actions})
    actions = _pick_actions(request, catalog, pipelines)
    if not actions:
        res.errors.append("no action of the catalog matches the request (searched: "
                          f"{', '.join(a.name for a in catalog.search(request, limit=5)) or 'nothing found'})")
        return res
    wanted_children = set(tokens(request))
    tables: list[Table] = []
    for a in actions:
        for t in table_for(a, pipelines, wanted_children):
            if all(t.name != u.name for u in tables):
                tables.append(t)
    res.notes.append("actions: " + ", ".join(f"{a.name} ({a.system}, {a.protocol})" for a in actions))
    # group-by columns; a missing one may come from another action that joins (region -> customers)
    group: list[tuple[Table | None, str, str]] = []  # (table, column expr source, output name)
    for w in it.group_words:
        if w in ("day", "date", "daily"):
            found = next(((t, c) for t in tables for c in t.columns if c.kind == "time"), None)
            if found:
                group.append((found[0], f"cast({{{found[0].name}}}.{found[1].name} as date)", "day"))
            continue
        if w in ("month",):
            found = next(((t, c) for t in tables for c in t.columns if c.kind == "time"), None)
            if found:
                group.append((found[0], f"date_trunc('month', {{{found[0].name}}}.{found[1].name})", "month"))
            continue
        hit = _find_col(w, tables)
        entity_table = next((t for t in tables if w in t.entity and t.col("name")), None)
        if hit and hit[1].name.lower() in (w, w + "s"):
            group.append((hit[0], f"{{{hit[0].name}}}.{hit[1].name}", hit[1].name))
        elif entity_table is not None:
            group.append((entity_table, f"{{{entity_table.name}}}.name", w))
        elif hit:
            group.append((hit[0], f"{{{hit[0].name}}}.{hit[1].name}", hit[1].name))
        else:
            extra = None
            for a in catalog.actions:
                if not _is_read(a) or any(a.name == t.action for t in tables):
                    continue
                other = table_for(a, pipelines)[0]
                c = other.col(w)
                if c is not None and any(infer_join(t, other) for t in tables):
                    extra = (other, c)
                    break
            if extra is None:
                res.notes.append(f"'{w}': no column of the chosen actions (or one that joins them); ignored")
                continue
            tables.append(extra[0])
            res.notes.append(f"'per {w}': joined {extra[0].name} ({extra[0].action}) for its column {w}")
            group.append((extra[0], f"{{{extra[0].name}}}.{extra[1].name}", extra[1].name))
    # joins: a spanning tree from the first table
    joined = [tables[0]]
    join_sql: list[tuple[Table, Table, str, str]] = []
    pending = tables[1:]
    while pending:
        progress = False
        for t in list(pending):
            for u in joined:
                key = infer_join(u, t)
                if key:
                    join_sql.append((t, u, key[1], key[0]))
                    joined.append(t)
                    pending.remove(t)
                    res.notes.append(f"join {u.name}.{key[0]} = {t.name}.{key[1]} (matching names and types)")
                    progress = True
                    break
        if not progress:
            res.errors.append("no join key relates " + ", ".join(t.name for t in pending) + " to "
                              + ", ".join(t.name for t in joined) + " (no matching field names and types in their "
                              "output schemas)")
            return res
    used: set[str] = set()
    alias = {t.name: _alias(t.name, used) for t in joined}

    def fill(expr: str) -> str:
        for tname, al in alias.items():
            expr = expr.replace("{" + tname + "}", al)
        return expr

    # filters
    where: list[str] = []
    for word, op, value in it.filters:
        hit = _find_col(_stem(word), joined) or _find_col(word, joined)
        if hit is None:
            res.notes.append(f"filter on '{word}': no such column; ignored")
            continue
        t, c = hit
        where.append(f"{alias[t.name]}.{c.name} {op} {_lit(value, c.kind)}")
    raw_words = re.findall(r"[a-z0-9_-]+", request.lower())
    filtered = {w.split(" ")[0].split(".")[-1] for w in where}
    for t in joined:
        for c in t.columns:
            for value in c.enum:
                v = str(value).lower()
                if v in raw_words and f"{alias[t.name]}.{c.name}" not in filtered and not (
                        v in it.group_words or _find_col(v, joined)):
                    neg = v in it.negated
                    where.append(f"{alias[t.name]}.{c.name} {'<>' if neg else '='} {_lit(str(value), c.kind)}")
                    filtered.add(f"{alias[t.name]}.{c.name}")
    # the measure
    select: list[str] = [f"{fill(expr)} as {out}" if not expr.endswith(f".{out}") else fill(expr)
                         for _, expr, out in group]
    measure = None
    for exact in (True, False):
        for w in it.measure_words:
            for cand in [*_MEASURE_SYNONYMS.get(w, []), w]:
                hit = _find_col(cand, joined, prefer=joined[0], exact_only=exact)
                if hit and hit[1].kind in ("int", "num", "other"):
                    measure = (hit, w)
                    break
            if measure:
                break
        if measure:
            break
    agg = it.agg
    if agg is None and group:
        agg = "sum" if measure else "count"
    if agg and agg != "count" and measure is None:
        res.notes.append(f"'{agg}': no numeric column named in the request; counting rows instead")
        agg = "count"
    if agg:
        if measure:
            (mt, mc), w = measure
            out = w if w in ("revenue", "turnover", "sale") else f"{'total' if agg == 'sum' else agg}_{mc.name}"
            select.append(f"{agg}({alias[mt.name]}.{mc.name}) as {out}")
            if agg == "sum" or it.agg == "count":
                select.insert(len(group), f"count(*) as {joined[0].name.split('_')[-1]}")
        else:
            select.append(f"count(*) as {joined[0].name.split('_')[-1]}")
        res.notes.append(f"aggregate: {', '.join(select[len(group):])}"
                         + (f" per {', '.join(o for _, _, o in group)}" if group else ""))
    else:
        cols: list[str] = []
        names: set[str] = set()
        for t in joined:
            for c in t.columns:
                if c.name.lower() in names:
                    continue
                names.add(c.name.lower())
                cols.append(f"{alias[t.name]}.{c.name}")
        select = cols
    model_sql = None
    if len(joined) > 1 or where or agg or group:
        lines = [f"select {', '.join(select)}", f"from {joined[0].name} {alias[joined[0].name]}"]
        for t, u, tcol, ucol in join_sql:
            lines.append(f"join {t.name} {alias[t.name]} on {alias[t.name]}.{tcol} = {alias[u.name]}.{ucol}")
        if where:
            lines.append("where " + " and ".join(where))
            res.notes.append("filter: " + " and ".join(where))
        if agg and group:
            lines.append("group by all")
        lines.append("order by all")
        model_sql = "\n".join(lines) + "\n"
    # the spec
    needs_partitions = any(t.partitioned for t in joined) or it.partitions is not None
    pname = name or _pipeline_name(request, joined, group)
    spec: dict[str, Any] = {"pipeline": pname, "description": request.strip()}
    if needs_partitions:
        kind = it.partitions or "daily"
        tmpl_p = next((t.template[0] for t in joined if t.template and t.template[0].spec.partitions), None)
        if tmpl_p is not None and tmpl_p.spec.partitions is not None:
            start, tz = tmpl_p.spec.partitions.window.start, tmpl_p.spec.partitions.window.timezone
        else:
            start, tz = date.today() - timedelta(days=30), "UTC"
        if kind == "monthly":
            start = start.replace(day=1)
        spec["partitions"] = {kind: {"start": start.isoformat(), "timezone": tz}}
        if not any(t.partitioned for t in joined):
            res.notes.append("partitions: the sources have no time parameters; each partition reloads them whole")
        res.notes.append(f"partitions: {kind} from {start} ({tz}); time parameters -> "
                         "{{ partition.start }} / {{ partition.end }}")
    else:
        spec["partitions"] = "none"
    if it.schedule:
        spec["schedule"] = it.schedule
        res.notes.append(f"schedule: {it.schedule}")
    if it.window_note:
        res.notes.append(it.window_note)
    spec["systems"] = {}
    for t in joined:
        if t.system not in spec["systems"]:
            sysraw = system_raw(t.system, pipelines)
            if sysraw is None:
                res.errors.append(f"system '{t.system}' of action {t.action} is in none of the given specs")
                return res
            spec["systems"][t.system] = sysraw
    spec["sources"] = {}
    for t in joined:
        if t.parent is not None:
            continue
        raw = dict(t.raw)
        for col, op_where in _suggested_rules(t, where, alias).items():
            raw.setdefault("rules", {}).setdefault(col, op_where)
        spec["sources"][t.name] = raw
    if model_sql:
        mname = _model_name(it, group, measure, joined, where)
        spec["models"] = {mname: {"description": f"Planned for: {request.strip()}", "sql": model_sql}}
        res.result_table = mname
    else:
        res.result_table = joined[0].name
    res.actions = [t.action for t in joined if t.parent is None]
    res.spec_text = dump_spec(spec, request, res.notes)
    return res


def _suggested_rules(t: Table, where: list[str], alias: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Row rules to suggest: the primary key present; the allowed values of enumerated columns filtered on."""
    rules: dict[str, dict[str, Any]] = {}
    declared = {c.name for c in t.columns}
    pk = t.raw.get("primary_key") or []
    for k in [pk] if isinstance(pk, str) else pk:
        if k in declared or not t.raw.get("columns"):
            rules[k] = {"not_null": True}
    for c in t.columns:
        if c.enum and any(w.startswith(f"{alias.get(t.name)}.{c.name} ") for w in where):
            rules[c.name] = {"in": list(c.enum)}
    return rules


def _pipeline_name(request: str, tables: list[Table], group: list[tuple[Any, str, str]]) -> str:
    base = "_".join(dict.fromkeys(t.name.split("_")[-1] for t in tables if t.parent is None))
    if group:
        base += "_by_" + "_".join(o for _, _, o in group)
    return re.sub(r"[^a-z0-9_]", "_", f"plan_{base}".lower())[:60]


def _model_name(it: _Intent, group: list[tuple[Any, str, str]], measure: Any, tables: list[Table],
                where: list[str]) -> str:
    head = (measure[1] if measure else None) or (it.agg and f"{tables[0].name.split('_')[-1]}_count") \
        or "_".join(t.name.split("_")[-1] for t in tables)
    if it.agg == "count" and not measure:
        head = f"{tables[0].name.split('_')[-1]}_count"
    name = head + ("_by_" + "_".join(o for _, _, o in group) if group else "")
    if not group and not it.agg and where and len(tables) == 1:
        name = f"{tables[0].name}_filtered"
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def _repr_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _repr_str)


def dump_spec(spec: dict[str, Any], request: str, notes: Sequence[str]) -> str:
    head = ["# Planned by `hub agent plan` for the request:", f"#   {request.strip()}"]
    head += [f"# - {n}" for n in notes]
    body = yaml.dump(spec, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    return "\n".join(head) + "\n" + body


def distinct_names(text: str, pipelines: Sequence[Pipeline], path: Path) -> tuple[str, list[str]]:
    """*text* with every asset named like an asset of another spec of the project renamed
    ``<pipeline>_<name>`` (model SQL, exports, checks and depends_on follow), and a note per rename: a plan
    written next to the demo must not take over the demo's tables (issue: pipelines overwrote each other)."""
    import sqlglot
    from sqlglot import exp

    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        return text, []
    here = path.resolve()
    taken = {a for p in pipelines if p.path.resolve() != here for a in p.asset_names()}
    prefix = str(data.get("pipeline") or "plan")
    sections = [data.get(k) for k in ("sources", "models", "exports")]
    sections += [s.get("children") for s in (data.get("sources") or {}).values() if isinstance(s, dict)]
    mine = {str(k) for section in sections if isinstance(section, dict) for k in section}
    renames: dict[str, str] = {}
    for name in sorted(mine & taken):
        new = f"{prefix}_{name}"
        while new in taken or new in mine:
            new += "_"
        renames[name] = new
    if not renames:
        return text, []
    for section in sections:
        if isinstance(section, dict):
            for old in [k for k in section if k in renames]:
                section[renames[old]] = section.pop(old)

    def rewrite(sql: str) -> str:  # the tables' names only, the author's text otherwise kept as written
        tables = {t.name for t in sqlglot.parse_one(sql, read="duckdb").find_all(exp.Table)} & set(renames)
        out, at, previous = [], 0, None
        for token in sqlglot.tokenize(sql, read="duckdb"):
            qualified = previous is not None and previous.token_type == sqlglot.TokenType.DOT  # a column, o.x
            previous = token
            if token.token_type == sqlglot.TokenType.VAR and token.text in tables and not qualified:
                out += [sql[at:token.start], renames[token.text]]
                at = token.end + 1
        return "".join(out) + sql[at:]

    for model in (data.get("models") or {}).values():
        if isinstance(model, dict) and isinstance(model.get("sql"), str):
            model["sql"] = rewrite(model["sql"])
            model["depends_on"] = [renames.get(d, d) for d in model.get("depends_on") or []] or None
            if model["depends_on"] is None:
                model.pop("depends_on")
    for export in (data.get("exports") or {}).values():
        if isinstance(export, dict):
            if export.get("table") in renames:
                export["table"] = renames[export["table"]]
            if isinstance(export.get("sql"), str):
                export["sql"] = rewrite(export["sql"])
    if isinstance(data.get("checks"), dict):
        data["checks"] = {renames.get(k, k): v for k, v in data["checks"].items()}
    notes = [f"renamed {old} to {new}: another spec of the project already has an asset named {old}"
             for old, new in renames.items()]
    head = [line for line in text.splitlines() if line.startswith("#")][:64]
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120, default_flow_style=False)
    return "\n".join([*head, *[f"# - {n}" for n in notes]]) + "\n" + body, notes


# ------------------------------------------------------------------------------------------ validation

def check_params(pipeline: Pipeline, catalog: CatalogLike) -> tuple[list[str], dict[str, Any]]:
    """Each source reads an action of the catalog (read-only) and its parameters fit the action's input
    schema. Returns the problems and the action of each source."""
    import jsonschema

    problems: list[str] = []
    by_source: dict[str, Any] = {}
    for name in pipeline.sources:
        action = next((a for a in catalog.actions if _binding_matches(a, pipeline, name)), None)
        if action is None:
            problems.append(f"sources.{name}: reads no action of the catalog (system "
                            f"'{pipeline.sources[name].system_name}'); use search_actions/describe_action")
            continue
        if not _is_read(action):
            problems.append(f"sources.{name}: action {action.name} writes ({action.side_effect}); sources only read")
            continue
        by_source[name] = action
        src = pipeline.sources[name]
        params = dict(src.protocol.source_params(src.config))
        props = (action.input_schema or {}).get("properties") or {}
        for pname, value in params.items():
            ps = props.get(pname)
            if ps is None:
                if props and not (action.input_schema or {}).get("additionalProperties", False) \
                        and src.protocol.params_are_inputs:
                    problems.append(f"sources.{name}.params.{pname}: not an input of {action.name} "
                                    f"(inputs: {', '.join(props)})")
                continue
            if _is_templated(value):
                if _kind(ps) not in ("time", "str", "other"):
                    problems.append(f"sources.{name}.params.{pname}: a partition bound (text) for an input of "
                                    f"type {ps.get('type')}")
                continue
            if isinstance(value, str) and "{{" in value:
                continue
            try:
                jsonschema.validate(value, ps)
            except jsonschema.ValidationError as exc:
                problems.append(f"sources.{name}.params.{pname}: {exc.message} (input schema of {action.name})")
        for req in (action.input_schema or {}).get("required") or []:
            if req not in params and src.protocol.params_are_inputs and "default" not in (props.get(req) or {}):
                problems.append(f"sources.{name}.params: the required input '{req}' of {action.name} is missing")
    return problems, by_source


def planned_columns(pipeline: Pipeline, by_source: dict[str, Any]) -> dict[str, set[str] | None]:
    """The columns each planned table will have (None: unknown, not checked)."""
    out: dict[str, set[str] | None] = {}
    for name, src in pipeline.sources.items():
        cols = src.spec.output_columns()
        if cols is None:
            cols = src.protocol.planned_columns(src.config)
        if cols is None and name in by_source:
            props = (by_source[name].output_schema or {}).get("properties")
            cols = list(props) if props else None
        out[name] = {c.lower() for c in cols} if cols is not None else None
        for cname, child in src.spec.children.items():
            ccols = [c.name or "" for _, c in child.column_specs()] if child.columns else None
            out[cname] = {c.lower() for c in [*src.spec.primary_key, *ccols]} if ccols is not None else None
    for name in out:
        if out[name] is not None:
            out[name] |= {"_hub_partition", "_hub_run_id", "_hub_loaded_at"}  # type: ignore[operator]
    return out


def check_model_sql(pipeline: Pipeline, columns: dict[str, set[str] | None]) -> list[str]:
    """Model SQL parses as DuckDB and reads only planned tables and their columns."""
    import sqlglot
    from sqlglot import exp

    problems: list[str] = []
    for mname, model in pipeline.spec.models.items():
        try:
            tree = sqlglot.parse_one(model.sql, read="duckdb")
        except sqlglot.errors.ParseError as exc:
            problems.append(f"models.{mname}.sql: does not parse (DuckDB): {str(exc).splitlines()[0]}")
            continue
        known = {**columns, **{m: None for m in pipeline.spec.models if m != mname}}
        ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
        aliases: dict[str, str | None] = {}
        referenced: list[str] = []
        for t in tree.find_all(exp.Table):
            if t.name in ctes:
                aliases[t.alias_or_name] = None
                continue
            if t.name not in known:
                problems.append(f"models.{mname}.sql: reads '{t.name}', which the plan does not load "
                                f"(tables: {', '.join(sorted(known))})")
                continue
            aliases[t.alias_or_name] = t.name
            referenced.append(t.name)
        for sq in tree.find_all(exp.Subquery):
            if sq.alias:
                aliases[sq.alias] = None
        select_aliases = {a.alias.lower() for a in tree.find_all(exp.Alias)}
        for col in tree.find_all(exp.Column):
            cname = col.name.lower()
            if not cname or isinstance(col.this, exp.Star):
                continue
            if col.table:
                if col.table not in aliases:
                    problems.append(f"models.{mname}.sql: '{col.table}.{col.name}': no table or alias '{col.table}'")
                    continue
                table = aliases[col.table]
                cols = known.get(table) if table else None
                if table and cols is not None and cname not in cols:
                    problems.append(f"models.{mname}.sql: {table} has no column '{col.name}' (columns: "
                                    f"{', '.join(sorted(c for c in cols if not c.startswith('_hub_')))})")
            else:
                pool = [known.get(t) for t in referenced]
                if cname in select_aliases or any(p is None for p in pool) or None in aliases.values():
                    continue
                if not any(cname in p for p in pool if p is not None):
                    problems.append(f"models.{mname}.sql: no planned table has a column '{col.name}'")
    return problems


def _first_partition(pipeline: Pipeline) -> str | None:
    from hub.dagster.definitions import partitions_def

    parts = partitions_def(pipeline.spec.partitions)
    return None if parts is None else parts.get_first_partition_key()


def dry_run(text: str, path: Path, *, partition: str | None = None, warehouse: Path | None = None
            ) -> tuple[list[str], dict[str, int], str | None]:
    """Materialize the plan for one partition into a temporary DuckDB warehouse (or *warehouse*) on an
    ephemeral Dagster instance, without side effects (no exports, files stay where they are).
    Returns (problems, rows per asset, the partition)."""
    import dagster as dg

    from hub.dagster.run import run_pipeline
    from hub.files import ready_files

    data = yaml.safe_load(text)
    data.pop("exports", None)
    data.pop("schedule", None)
    for src in (data.get("sources") or {}).values():
        if isinstance(src, dict):
            src.pop("after", None)
            src.pop("sensor", None)
    with tempfile.TemporaryDirectory(prefix="hub-plan-") as tmp:
        wh = warehouse or Path(tmp) / "dry_run.duckdb"
        data["warehouse"] = f"duckdb:///{wh}"
        try:
            pipeline = loads(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), path)
        except SpecError as exc:
            return list(exc.problems), {}, None
        key = partition or _first_partition(pipeline)
        counts: dict[str, int] = {}
        try:
            files: list[str] | None = None
            per_file = [n for n, s in pipeline.sources.items() if s.per_file]
            if per_file:
                ready = ready_files(pipeline, per_file[0])
                files = [ready[0].name] if ready else []
            outcomes = run_pipeline(pipeline, dg.DagsterInstance.ephemeral(), partitions=[key], files=files)
        except (HubError, OSError) as exc:
            return [f"dry run ({key or 'unpartitioned'}): {exc}"], counts, key
        for o in outcomes:
            counts.update(o.row_counts)
        failed = [o for o in outcomes if not o.success]
        if failed:
            return [f"dry run ({key or 'unpartitioned'}): {o.error}" for o in failed], counts, key
        return [], counts, key


def validate_plan(text: str, pipelines: Sequence[Pipeline], catalog: CatalogLike, *, path: Path | None = None,
                  run: bool = True, partition: str | None = None, warehouse: Path | None = None
                  ) -> tuple[list[str], dict[str, int], str | None]:
    """Every check a plan must pass before it is written; returns (problems, dry-run rows, partition)."""
    path = path or (_root(pipelines) / "pipelines" / "_plan.yaml")
    try:
        pipeline = loads(text, path)
    except SpecError as exc:
        return list(exc.problems), {}, None
    problems, by_source = check_params(pipeline, catalog)
    problems += check_model_sql(pipeline, planned_columns(pipeline, by_source))
    if problems or not run:
        return problems, {}, None
    return dry_run(text, path, partition=partition, warehouse=warehouse)


def _root(pipelines: Sequence[Pipeline]) -> Path:
    return pipelines[0].root if pipelines else Path.cwd()


def result_table(text: str) -> str | None:
    """The table answering the request: the last model, else the first source."""
    data = yaml.safe_load(text) or {}
    models = list(data.get("models") or {})
    sources = list(data.get("sources") or {})
    return models[-1] if models else (sources[0] if sources else None)


# ----------------------------------------------------------------------------------------------- plan

def plan(request: str, pipelines: list[Pipeline], backend: Backend = "offline", *, catalog: CatalogLike | None = None,
         name: str | None = None, output: Path | None = None, dry_run: bool = True, partition: str | None = None,
         warehouse: Path | None = None, llm: ModelBackend | None = None) -> PlanResult:
    """Plan *request* over the actions of *pipelines*' systems and validate the plan (spec, actions,
    parameters, model SQL, a dry run of one partition). With *output*, the spec is written there only when
    every check passed. *llm*: the model backend, an :class:`hub.agent.llm.LLMConfig` (the llm module builds
    on this one, never the other way round)."""
    if catalog is None:
        from hub.agent.catalog import build_catalog

        catalog = build_catalog(pipelines)
    if name is None and output is not None:
        name = re.sub(r"[^A-Za-z0-9_]", "_", output.stem)
        name = name if re.match(r"[A-Za-z_]", name) else f"p_{name}"
    path = output or (_root(pipelines) / "pipelines" / f"{name or '_plan'}.yaml")
    if backend == "offline":
        res = compose(request, catalog, pipelines, name=name)
        if res.spec_text is not None and not res.errors:
            res.spec_text, renamed = distinct_names(res.spec_text, pipelines, path)
            res.notes += renamed
            if renamed:  # the answering table may be among the renamed assets
                res.result_table = result_table(res.spec_text)
            problems, counts, key = validate_plan(res.spec_text, pipelines, catalog, path=path, run=dry_run,
                                                  partition=partition, warehouse=warehouse)
            res.errors += problems
            res.dry_run, res.partition = counts, key
    elif backend == "llm":
        if llm is None:
            raise HubError("the llm backend needs its endpoint: pass llm=hub.agent.llm.LLMConfig.from_env() "
                           "(HUB_LLM_BASE_URL, HUB_LLM_MODEL)")
        res = llm.plan(request, pipelines, catalog, name=name, path=path, dry_run=dry_run, partition=partition,
                       warehouse=warehouse)
    else:
        raise HubError(f"unknown planner backend '{backend}' (offline or llm)")
    res.ok = res.spec_text is not None and not res.errors and not res.refused
    if res.ok and res.spec_text is not None:
        res.result_table = res.result_table or result_table(res.spec_text)
        if res.dry_run and res.result_table in res.dry_run:
            res.notes.append(f"dry run {res.partition or '(unpartitioned)'}: {res.result_table} has "
                             f"{res.dry_run[res.result_table]} rows")
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(res.spec_text, encoding="utf-8")
    return res


__all__ = ["PlanResult", "compose", "distinct_names", "plan", "tokens", "validate_plan", "write_intent"]
