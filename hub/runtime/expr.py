"""Typed values from spec templates, in the sandbox of :mod:`hub.runtime.sandbox`.

Flows (:mod:`hub.flows`) map fields between systems, so a template must be able to yield a number, a
list or an object, not only text. The rule is the one Ansible uses: a string that is exactly one
``{{ expression }}`` evaluates to the expression's value (``"{{ item.amount }}"`` is a Decimal, ``"{{
item.lines }}"`` a list); any other template renders to a string; a string without a template is itself.
Evaluation runs in the same limited environment as every spec template (sizes, work and time bounded,
loops and assignments refused), and :func:`references` lists the dotted names an expression reads, so a
spec check can name an unknown field before a run.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from jinja2 import TemplateError, UndefinedError, nodes
from jinja2.runtime import Undefined

from hub.errors import HubError
from hub.runtime.sandbox import (
    MAX_TEMPLATE,
    MAX_VALUE,
    LimitedEnvironment,
    TemplateLimitError,
    UnknownName,
    budgeted,
    check_statements,
    collect,
    size_of,
)
from hub.runtime.window import is_template, render_with


def _from_json(text: Any) -> Any:
    from hub.runtime import jsonsafe

    return jsonsafe.loads(text) if isinstance(text, (str, bytes)) else text


def _element(tag: str, value: Any) -> Any:
    from lxml import etree

    el = etree.Element(tag)
    if isinstance(value, dict):
        for k, v in value.items():
            for item in v if isinstance(v, list) else [v]:
                el.append(_element(str(k), item))
    elif value is not None:
        el.text = str(value)
    return el


def _to_xml(value: Any, root: str = "record") -> str:
    """A dict (nested dicts and lists: repeated elements) as an XML document under *root*."""
    from lxml import etree

    return str(etree.tostring(_element(root, value), encoding="unicode"))


def _xml_value(el: Any) -> Any:
    children = list(el)
    if not children:
        return el.text
    out: dict[str, Any] = {}
    for child in children:
        tag = etree_local(child.tag)
        value = _xml_value(child)
        if tag in out:
            out[tag] = [*out[tag], value] if isinstance(out[tag], list) else [out[tag], value]
        else:
            out[tag] = value
    return out


def etree_local(tag: Any) -> str:
    return str(tag).rsplit("}", 1)[-1]


def _from_xml(text: Any) -> Any:
    """An XML document as dicts (element text as strings, repeated elements as lists), parsed safely
    (:mod:`hub.runtime.xmlsafe`: no DTDs, no entities, bounded depth)."""
    from hub.runtime import xmlsafe

    root = xmlsafe.fromstring(text.encode() if isinstance(text, str) else text, "a template value")
    return {etree_local(root.tag): _xml_value(root)}


def _to_csv(rows: Any, delimiter: str = ",") -> str:
    """Rows (dicts) as CSV text with a header line."""
    import csv
    import io

    rows = [rows] if isinstance(rows, dict) else list(rows or [])
    out = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(out, fieldnames=fields, delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _from_csv(text: str, delimiter: str = ",") -> list[dict[str, Any]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


_ONE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)
_env = LimitedEnvironment(undefined=UnknownName, autoescape=False)
# body conversions for flows: JSON <-> XML <-> CSV (results are charged to the render's budget like any filter)
for _name, _func in (("from_json", _from_json), ("to_xml", _to_xml), ("from_xml", _from_xml),
                     ("to_csv", _to_csv), ("from_csv", _from_csv)):
    _env.add_filter(_name, _func)


_NAME_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_MISSING = object()


def _lookup(expr: str, context: Mapping[str, Any]) -> Any:
    """The value of a plain name path (``item.order_id``) found by key lookups through dicts, or ``_MISSING``
    when the expression is anything else or a step does not resolve that way (then Jinja evaluates it, with
    its errors). Jinja would look ``a.b`` up as an attribute first: names that are attributes of dict
    (``items``, ``keys``) are left to it, so the result is always the one Jinja gives — a flow evaluates such
    paths for every item, and Jinja's call costs a tenth of a millisecond each."""
    if not _NAME_PATH.match(expr):
        return _MISSING
    value: Any = context
    for part in expr.split("."):
        if not isinstance(value, dict) or part not in value or hasattr(dict, part):
            return _MISSING
        value = value[part]
    return value


def single_expression(value: str) -> str | None:
    """The expression of a string that is exactly one ``{{ ... }}``, else None."""
    m = _ONE.match(value)
    return m.group("expr").strip() if m else None


def evaluate(value: Any, context: Mapping[str, Any], *, field: str) -> Any:
    """*value* with its templates evaluated against *context*: recursively through dicts and lists; a string
    that is one ``{{ expression }}`` becomes the expression's value, other templates render to text.
    Every failure is a :class:`HubError` naming *field*."""
    if isinstance(value, dict):
        return {k: evaluate(v, context, field=f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [evaluate(v, context, field=f"{field}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or not is_template(value):
        return value
    expr = single_expression(value)
    if expr is None:
        return _render(value, context, field)
    if len(expr) > MAX_TEMPLATE:
        raise HubError(f"{field}: expression of {len(expr):,} characters; the limit is {MAX_TEMPLATE:,}")
    found = _lookup(expr, context)
    if found is not _MISSING and not isinstance(found, Undefined):
        if size_of(found) > MAX_VALUE:
            raise HubError(f"{field}: '{_short(value)}' refused: the value is larger than {MAX_VALUE:,} characters")
        return found
    try:
        with budgeted():
            compiled = _compiled_expression(expr)
            result = compiled(**context)
            if isinstance(result, Undefined):
                str(result)  # raises the unknown-name error
            if size_of(result) > MAX_VALUE:
                raise TemplateLimitError(f"the value is larger than {MAX_VALUE:,} characters")
    except TemplateLimitError as exc:
        raise HubError(f"{field}: '{_short(value)}' refused: {exc}") from None
    except UndefinedError as exc:
        raise HubError(f"{field}: cannot evaluate '{_short(value)}': {exc}") from None
    except TemplateError as exc:
        raise HubError(f"{field}: invalid expression '{_short(value)}': {exc}") from None
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError) as exc:
        raise HubError(f"{field}: cannot evaluate '{_short(value)}': {type(exc).__name__}: {exc}") from None
    except HubError as exc:  # a filter refused its input (an XML document with a DTD ...)
        raise HubError(f"{field}: cannot evaluate '{_short(value)}': {exc}") from None
    return result


@functools.lru_cache(maxsize=1024)
def _compiled_expression(expr: str) -> Any:
    """Compiling costs about a millisecond; a flow evaluates the same expressions for every item."""
    return _env.compile_expression(expr, undefined_to_none=False)


@functools.lru_cache(maxsize=1024)
def _compiled_template(value: str) -> Any:
    ast = _env.parse(value)
    check_statements(ast)
    return _env.from_string(ast)


def _render(value: str, context: Mapping[str, Any], field: str) -> str:
    """A template that is not a single expression, rendered to text (compiled once per text); failures are
    reported as :func:`hub.runtime.window.render_with` reports them."""
    if len(value) > MAX_TEMPLATE:
        return render_with(value, dict(context), field=field)
    try:
        with budgeted():
            template = _compiled_template(value)
            return collect(template.generate(dict(context)))
    except Exception:  # every failure is reported by the uncached path, with its usual message
        return render_with(value, dict(context), field=field)


def truthy(value: Any, context: Mapping[str, Any], *, field: str) -> bool:
    """A condition (``when:``): an expression (with or without ``{{ }}``) evaluated to a boolean. Rendered
    text counts as false when it is empty, ``false``, ``no``, ``0`` or ``none``."""
    if isinstance(value, bool):
        return value
    text = str(value)
    if not is_template(text):
        text = "{{ " + text + " }}"
    result = evaluate(text, context, field=field)
    if isinstance(result, str) and single_expression(text) is None:
        return result.strip().lower() not in ("", "false", "no", "0", "none")
    return bool(result)


def parse(value: str, *, field: str) -> nodes.Template:
    """The parsed template (statements checked), for static analysis; :class:`HubError` when invalid."""
    if len(value) > MAX_TEMPLATE:
        raise HubError(f"{field}: template of {len(value):,} characters; templates may have at most "
                       f"{MAX_TEMPLATE:,}")
    try:
        ast = _env.parse(value)
        check_statements(ast)
    except TemplateLimitError as exc:
        raise HubError(f"{field}: template '{_short(value)}' refused: {exc}") from None
    except TemplateError as exc:
        raise HubError(f"{field}: invalid template '{_short(value)}': {exc}") from None
    return ast


def references(value: str, *, field: str, condition: bool = False) -> list[tuple[str, ...]]:
    """The dotted names *value* reads (``item.amount`` → ``("item", "amount")``, ``steps.erp.id`` →
    ``("steps", "erp", "id")``), outermost first; a name used with a subscript stops at it. *condition*:
    the value is a bare expression (``when:``). Raises :class:`HubError` when it does not parse."""
    text = value if not condition or is_template(value) else "{{ " + value + " }}"
    if not is_template(text):
        return []
    ast = parse(text, field=field)
    found: list[tuple[str, ...]] = []
    inner: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner:
            continue
        path: list[str] = []
        cur: nodes.Node = node
        while True:
            if isinstance(cur, nodes.Getattr):
                path.append(cur.attr)
            elif isinstance(cur, nodes.Getitem) and isinstance(cur.arg, nodes.Const) and isinstance(cur.arg.value,
                                                                                                     str):
                path.append(cur.arg.value)
            elif isinstance(cur, nodes.Getitem):
                path.clear()  # a computed subscript: only what comes before it is known
            else:
                break
            inner.add(id(cur.node))
            cur = cur.node
        if isinstance(cur, nodes.Name) and cur.ctx == "load":
            found.append((cur.name, *reversed(path)))
    return found


def _short(value: str) -> str:
    return value if len(value) <= 80 else value[:80] + "..."


__all__ = ["evaluate", "parse", "references", "single_expression", "truthy"]
