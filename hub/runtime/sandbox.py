"""The Jinja environment spec templates render in: a sandbox with limits on size, work and time.

Jinja's :class:`~jinja2.sandbox.SandboxedEnvironment` stops a template from reaching Python internals, but
not from exhausting the process: ``{{ 9**(9**9) }}`` computes for hours, ``{{ 'a'*2000000000 }}`` allocates
2 GB, ``{{ 'x'|center(10**9) }}`` 1 GB. Spec values are short strings (a date in a query parameter), so the
template language offered to them is small and bounded:

* expressions (``{{ ... }}``) and ``{% if %}`` only: loops, macros, assignments, blocks and imports are
  refused when the template is parsed (a loop or a recursive macro is unbounded work no output cap sees);
* every operation that can make a value much bigger than its inputs is checked *before* it runs: ``**``
  (result above :data:`MAX_INT_BITS` bits), ``*`` (repetition of a string or list beyond :data:`MAX_VALUE`
  characters, integer products beyond :data:`MAX_INT_BITS`), printf ``%`` / ``format`` and ``str.format``
  widths, ``center``/``indent``/``wordwrap``/``join``/``replace`` and their ``str`` method twins,
  ``range()`` beyond :data:`MAX_RANGE` items, ``slice``/``batch`` counts, ``tojson`` indents;
* every string or list an operation produces is at most :data:`MAX_VALUE` characters, and together they
  are at most :data:`MAX_WORK` per render (so ``map`` cannot repeat an allowed operation ten thousand times);
* the output is collected from :meth:`~jinja2.Template.generate` and refused once it passes
  :data:`MAX_OUTPUT`; a render that takes longer than :data:`MAX_SECONDS` is stopped at the next operation;
* a template longer than :data:`MAX_TEMPLATE` characters is refused unread.

A limit that is hit raises :class:`TemplateLimitError` (a Jinja ``SecurityError``) naming the limit; the
callers in :mod:`hub.runtime.window` add the spec field.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from functools import update_wrapper, wraps
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

#: Characters of one rendered value (the whole template's output).
MAX_OUTPUT = 64 * 1024
#: Characters of any one string (or printed list) a template computes on the way.
MAX_VALUE = 64 * 1024
#: Characters all operations of one render may produce together.
MAX_WORK = 1024 * 1024
#: Bits of an integer a template may compute (``**``, ``*``).
MAX_INT_BITS = 4096
#: Items of a ``range()``.
MAX_RANGE = 10_000
#: Characters of a template's source.
MAX_TEMPLATE = 8 * 1024
#: Seconds one render may take (checked at every operation).
MAX_SECONDS = 2.0
#: ``tojson(indent)`` at most this.
MAX_JSON_INDENT = 16

#: Statements a spec template may use; everything else (for, macro, set, call, filter blocks, with,
#: include, import, extends, block) is refused when the template is parsed.
ALLOWED_STATEMENTS = (nodes.Output, nodes.If)


class TemplateLimitError(SecurityError):
    """A template would exceed one of the limits of this module (the message names it)."""


class _Budget:
    """What one render has used so far: characters produced and time."""

    def __init__(self) -> None:
        self.work = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def charge(self, size: int, what: str) -> None:
        if size > MAX_VALUE:
            raise TemplateLimitError(f"{what} would be {size:,} characters; a template value may have at most "
                                     f"{MAX_VALUE:,}")
        self.work += size
        if self.work > MAX_WORK:
            raise TemplateLimitError(f"the template computes more than {MAX_WORK:,} characters in all "
                                     f"(at {what})")
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering takes longer than {MAX_SECONDS:g}s")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("hub_template_budget", default=None)


def _current() -> _Budget:
    return _budget.get() or _Budget()  # outside budgeted(): each operation on its own


@contextlib.contextmanager
def budgeted() -> Iterator[None]:
    """One render's budget: operations inside the block share :data:`MAX_WORK` and :data:`MAX_SECONDS`."""
    token = _budget.set(_Budget())
    try:
        yield
    finally:
        _budget.reset(token)


# --- sizes ---------------------------------------------------------------------------------------------

def size_of(value: Any, _depth: int = 0) -> int:
    """About how many characters *value* prints as, without printing it (lists counted item by item)."""
    if isinstance(value, str | bytes | bytearray):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() * 10 // 33 + 2  # decimal digits (log10(2) ~ 0.301) and a sign
    if isinstance(value, float):
        return 24
    if isinstance(value, range):
        return len(value) * 8
    if _depth > 32:
        return MAX_VALUE + 1  # nesting this deep is not a spec value
    if isinstance(value, dict):
        return 2 + sum(size_of(k, _depth + 1) + size_of(v, _depth + 1) + 4 for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return 2 + sum(size_of(v, _depth + 1) + 2 for v in value)
    return 16


def _check_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_VALUE:
        raise TemplateLimitError(f"{what} width {width:,} is above the limit of {MAX_VALUE:,} characters")


def _check_estimate(estimate: int, what: str) -> None:
    budget = _current()
    left = MAX_WORK - budget.work
    if estimate > MAX_VALUE or estimate > left:
        raise TemplateLimitError(f"{what} would produce about {estimate:,} characters; a template value may "
                                 f"have at most {MAX_VALUE:,} (and a render {MAX_WORK:,} in all)")


def _produced(value: Any, what: str) -> Any:
    """Charge *value* to the render's budget when it is a string or a container."""
    if isinstance(value, str | bytes | bytearray | list | tuple | dict | set):
        _current().charge(size_of(value), what)
    elif time.monotonic() > _current().deadline:
        raise TemplateLimitError(f"rendering takes longer than {MAX_SECONDS:g}s")
    return value


# --- operators -----------------------------------------------------------------------------------------

def _power(base: Any, exp: Any) -> Any:
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        bits = abs(base).bit_length() * exp
        if bits > MAX_INT_BITS:
            raise TemplateLimitError(f"{base} ** {exp} would have about {bits:,} bits; integers in a template "
                                     f"may have at most {MAX_INT_BITS:,}")
    try:
        return base ** exp
    except OverflowError as exc:
        raise TemplateLimitError(f"{base!r} ** {exp!r} is too large: {exc}") from None


def _times(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise TemplateLimitError(f"the product would have about {bits:,} bits; integers in a template may "
                                     f"have at most {MAX_INT_BITS:,}")
        return left * right
    seq, count = (left, right) if isinstance(right, int) else (right, left) if isinstance(left, int) else (None, 0)
    if isinstance(seq, str | bytes | list | tuple) and count > 0:
        _check_estimate(size_of(seq) * count, f"repeating a value {count:,} times")
        return _produced(left * right, "a repetition")
    return left * right


_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([diouxXeEfFgGcrsab%])")


def _printf_check(fmt: str | bytes, values: Any) -> None:
    """Check the widths and precisions of ``fmt % values`` and its estimated size, before formatting."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    estimate = len(text) + size_of(values)
    for m in _PRINTF.finditer(text):
        for part in (m.group(1), m.group(2)):
            if part == "*":
                raise TemplateLimitError("'*' widths in % formats are not allowed in templates")
            if part:
                _check_width(int(part), "a % format")
                estimate += int(part)
    _check_estimate(estimate, "a % format")


def _printf(fmt: str | bytes, values: Any) -> Any:
    """``fmt % values`` with the widths and precisions checked first."""
    _printf_check(fmt, values)
    return _produced(fmt % values, "a % format")


def _plus(left: Any, right: Any) -> Any:
    return _produced(left + right, "a + b")


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str | bytes):
        return _printf(left, right)
    return left % right


# --- filters and methods ----------------------------------------------------------------------------------

def _lines(text: str) -> int:
    return text.count("\n") + 1


def _join(items: Iterable[Any], sep: Any) -> list[Any]:
    """The items of a join, counted before they are joined (a generator is consumed once)."""
    listed = list(items)
    estimate = sum(size_of(x) for x in listed) + size_of(sep) * max(len(listed) - 1, 0)
    _check_estimate(estimate, f"joining {len(listed):,} items")
    return listed


def _replace_estimate(s: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(s, str | bytes) and isinstance(old, str | bytes) and isinstance(new, str | bytes)):
        return
    hits = (len(s) + 1) if not old else s.count(old)  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_estimate(len(s) + hits * max(len(new) - len(old), 0), "replace")


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _filter_precheck(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a filter's arguments before it runs; returns the (possibly materialized) arguments.
    *args* start with the filtered value (Jinja's context/environment argument removed)."""
    value = args[0] if args else None
    if name == "center":
        _check_width(_arg(args, kwargs, 1, "width", 80), "center")
    elif name == "indent":
        width = _arg(args, kwargs, 1, "width", 4)
        per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        _check_width(per_line, "indent")
        if isinstance(value, str):
            _check_estimate(len(value) + _lines(value) * per_line, "indent")
    elif name == "wordwrap":
        wrap = _arg(args, kwargs, 3, "wrapstring")
        if isinstance(value, str) and isinstance(wrap, str) and len(wrap) > 1:
            width = _arg(args, kwargs, 1, "width", 79)
            breaks = min(len(value) + 1, len(value) // max(int(width), 1) + len(value.split()) + _lines(value))
            _check_estimate(len(value) + breaks * len(wrap), "wordwrap")
    elif name == "format":
        if isinstance(value, str):
            _printf_check(value, kwargs or args[1:])
    elif name == "join" and value is not None:  # with attribute=, the whole items are counted (more than needed)
        return (_join(value, _arg(args, kwargs, 1, "d", "")), *args[1:])
    elif name == "replace":
        _replace_estimate(value, _arg(args, kwargs, 1, "old"), _arg(args, kwargs, 2, "new"),
                          _arg(args, kwargs, 3, "count"))
    elif name == "slice":
        _check_count(_arg(args, kwargs, 1, "slices"), "slice")
    elif name == "batch":
        if _arg(args, kwargs, 2, "fill_with") is not None:
            _check_count(_arg(args, kwargs, 1, "linecount"), "batch")
    elif name == "tojson":
        indent = _arg(args, kwargs, 1, "indent")
        if isinstance(indent, int) and indent > MAX_JSON_INDENT:
            raise TemplateLimitError(f"tojson indent {indent} is above the limit of {MAX_JSON_INDENT}")
    elif name == "sum":
        start = _arg(args, kwargs, 2, "start", 0)
        if not isinstance(start, int | float):
            raise TemplateLimitError("sum() in a template adds numbers only (start must be a number)")
    return args


def _check_count(count: Any, what: str) -> None:
    if isinstance(count, int) and count > MAX_RANGE:
        raise TemplateLimitError(f"{what} count {count:,} is above the limit of {MAX_RANGE:,}")


def _limited_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """*func* with its arguments checked before and its result charged after."""
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @wraps(func)
    def limited(*args: Any, **kwargs: Any) -> Any:
        checked = _filter_precheck(name, args[skip:], kwargs)
        return _produced(func(*args[:skip], *checked, **kwargs), f"the {name} filter")

    return limited


#: ``str``/``bytes`` methods whose output can be much larger than the string: checked before the call.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
#: Methods a template may not call at all (their output size depends on a table we do not inspect).
_REFUSED_METHODS = frozenset({"translate", "maketrans"})


def _method_precheck(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, int) and not isinstance(owner, bool) and name == "to_bytes":
        _check_width(_arg(args, kwargs, 0, "length", 1), "to_bytes")
    if not isinstance(owner, str | bytes | bytearray):
        return args
    if name in _REFUSED_METHODS and isinstance(owner, str):
        raise TemplateLimitError(f"str.{name}() is not available in templates")
    if name in _WIDTH_METHODS:
        _check_width(_arg(args, kwargs, 0, "width", 0), f"str.{name}")
    elif name == "expandtabs":
        tab = _arg(args, kwargs, 0, "tabsize", 8)
        if isinstance(tab, int):
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            _check_estimate(len(owner) + tabs * tab, "expandtabs")
    elif name == "join" and args:
        return (_join(args[0], owner), *args[1:])
    elif name == "replace":
        _replace_estimate(owner, _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new"),
                          _arg(args, kwargs, 2, "count"))
    return args


_FORMAT_NUMBER = re.compile(r"\d+")


def _check_str_format(fmt: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """``str.format`` / ``format_map``: widths in the format specs, no nested fields, estimated size."""
    estimate = len(fmt) + size_of(list(args)) + size_of(kwargs)
    for _, field, spec, _ in string.Formatter().parse(fmt):
        if field is None or not spec:
            continue
        if "{" in spec:
            raise TemplateLimitError("nested format fields ('{:{width}}') are not allowed in templates")
        for number in _FORMAT_NUMBER.findall(spec):
            _check_width(int(number), "a format spec")
            estimate += int(number)
    _check_estimate(estimate, "str.format")


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the limits of this module (see the module docstring)."""

    intercepted_binops = frozenset({"**", "*", "%", "+"})
    _BINOPS: dict[str, Callable[[Any, Any], Any]] = {"**": _power, "*": _times, "%": _modulo, "+": _plus}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.clear()  # lipsum(n), cycler, joiner, namespace: nothing a spec value needs
        self.globals.update({"range": limited_range, "dict": dict})
        self.filters = {name: _limited_filter(name, func) for name, func in FILTERS.items()}

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        """Register a filter of the hub's own, with its result charged like the built-in ones'."""
        self.filters[name] = _limited_filter(name, func)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Operators that can blow a value up are checked before they run (Jinja's documented hook)."""
        return self._BINOPS[operator](left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Method calls (``'x'.center(n)``, ``'-'.join(...)``) get the filters' checks."""
        args = _method_precheck(__obj, args, kwargs)
        return _produced(super().call(__context, __obj, *args, **kwargs), f"{getattr(__obj, '__name__', 'call')}()")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``'...'.format(...)`` and ``format_map``: format specs checked before formatting."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if is_map and args and isinstance(args[0], dict) else {}
            _check_str_format(fmt, () if is_map else args, mapping or kwargs)
            return str(_produced(wrapped(*args, **kwargs), "str.format"))

        return update_wrapper(checked, value)


def limited_range(*args: int) -> range:
    """``range()`` of at most :data:`MAX_RANGE` items."""
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitError(f"range() of {len(rng):,} items; the limit is {MAX_RANGE:,}")
    return rng


def check_statements(ast: nodes.Template) -> None:
    """Refuse the statements a spec template may not use (see :data:`ALLOWED_STATEMENTS`)."""
    for node in ast.find_all(nodes.Stmt):
        if not isinstance(node, ALLOWED_STATEMENTS):
            tag = type(node).__name__.lower()
            raise TemplateLimitError(f"line {node.lineno}: {{% {tag} %}} is not allowed in spec templates "
                                     "(only {{ expressions }} and {% if %})")


def collect(chunks: Iterable[str]) -> str:
    """The output of :meth:`~jinja2.Template.generate`, refused once it passes :data:`MAX_OUTPUT`."""
    out: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateLimitError(f"the rendered value is longer than {MAX_OUTPUT:,} characters")
        out.append(chunk)
    return "".join(out)


class UnknownName(StrictUndefined):
    """Strict undefined names, with a message the callers can complete with the names that exist."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        return f"unknown name '{self._undefined_name}'"


__all__ = ["MAX_INT_BITS", "MAX_OUTPUT", "MAX_RANGE", "MAX_SECONDS", "MAX_TEMPLATE", "MAX_VALUE", "MAX_WORK",
           "LimitedEnvironment", "TemplateLimitError", "UnknownName", "budgeted", "check_statements", "collect",
           "limited_range", "size_of"]
