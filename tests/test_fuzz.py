"""Hostile input: random specs, files and responses end in data or a hub error (never another exception, a
crash or a hang), file names from a drop never leave its folder, templated SQL parameters are bound, and
oversized responses are refused. Examples are bounded so the whole file runs in well under a minute."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.rest import RestSource, RestSourceConfig, RestSystemConfig
from adapters.rest._paginate import PageRequest
from adapters.sftp import _formats
from adapters.sftp.config import FormatConfig
from hub.errors import HubError, SpecError
from hub.spec import loads

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])

# --- the spec loader ------------------------------------------------------------------------------------

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                  st.text(max_size=20), st.sampled_from(["${CRM_TOKEN}", "{{ partition.start }}", "$.items[*]",
                                                         "crm", "select 1", "int64", "daily", "{{ nope }}"]))
_keys = st.sampled_from(["pipeline", "sources", "systems", "models", "partitions", "rest", "sql", "soap", "sftp",
                         "system", "request", "path", "records", "columns", "primary_key", "url", "base_url",
                         "daily", "start", "table", "query", "params", "paginate", "cursor", "rules", "checks",
                         "exports", "schedule", "warehouse", "children", "files", "format", "csv"])
_trees = st.recursive(_leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(_keys | st.text(max_size=8), inner, max_size=5)),
                      max_leaves=25)


def _load_or_spec_error(text: str, tmp_path: Path) -> None:
    with contextlib.suppress(SpecError):
        loads(text, tmp_path / "fuzz.yaml")


@FUZZ
@given(tree=_trees)
def test_spec_loader_random_structures(tree: Any, tmp_path: Path) -> None:
    _load_or_spec_error(yaml.safe_dump(tree), tmp_path)


@FUZZ
@given(base=st.fixed_dictionaries({"pipeline": st.sampled_from(["p", "x y", ""]), "sources": _trees,
                                   "systems": _trees}, optional={"models": _trees, "partitions": _trees}))
@example(base={"pipeline": "p", "sources": {"s": {"system": []}}, "systems": None})  # once a TypeError
def test_spec_loader_near_valid_specs(base: dict[str, Any], tmp_path: Path) -> None:
    _load_or_spec_error(yaml.safe_dump(base), tmp_path)


@FUZZ
@given(text=st.text(max_size=300) | st.sampled_from(["a: &x [*x]", "!!python/object:os.system 1", "- [", "{",
                                                      "a: !!binary x", "\x00", "a:\n  - b\n c: d"]))
def test_spec_loader_random_text(text: str, tmp_path: Path) -> None:
    _load_or_spec_error(text, tmp_path)


# --- file readers ----------------------------------------------------------------------------------------

_bytes = st.one_of(
    st.binary(max_size=400),
    st.lists(st.sampled_from([b"a;b;c\n", b"1;2;3\n", b'"x;"y";z\n', b"\xff\xfe", b"\n", b";;;;;\n", b'"\n',
                              b"\x00", b"{\"a\": 1}\n", b"{bad\n", b"<Row a='1'><b>2</b></Row>", b"<", b"]]>",
                              b"<!DOCTYPE x [<!ENTITY e 'x'>]>", "ä;ö\n".encode("cp1252"), b"  12345678\n"]),
             max_size=40).map(b"".join),
)


def _read_all(data: bytes, fmt: dict[str, Any], tmp_path: Path, name: str = "drop.dat") -> list[pa.RecordBatch]:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        batches = list(_formats.read(path, FormatConfig.model_validate(fmt), name=name, base_dir=tmp_path,
                                     batch_size=7))
    except HubError:
        return []
    for b in batches:  # a bad row is marked with its reason, never silently dropped
        if _formats.ERROR in b.schema.names:
            errors = b.column(_formats.ERROR)
            raws = b.column(_formats.RAW) if _formats.RAW in b.schema.names else None
            for i in range(b.num_rows):
                if errors[i].is_valid:
                    assert errors[i].as_py(), "a marked row says why"
                    assert raws is None or raws[i].is_valid
    return batches


@FUZZ
@given(data=_bytes, delimiter=st.sampled_from([",", ";", "|", "\t"]), header=st.booleans(),
       encoding=st.sampled_from(["utf-8", "cp1252", "latin-1"]))
def test_csv_reader(data: bytes, delimiter: str, header: bool, encoding: str, tmp_path: Path) -> None:
    cfg: dict[str, Any] = {"delimiter": delimiter, "header": header, "encoding": encoding}
    if not header:
        cfg["columns"] = ["a", "b", "c"]
    _read_all(data, {"csv": cfg, "compression": "none"}, tmp_path)


@FUZZ
@given(data=_bytes, encoding=st.sampled_from(["utf-8", "cp1252"]))
def test_fixed_width_reader(data: bytes, encoding: str, tmp_path: Path) -> None:
    (tmp_path / "layout.yaml").write_text("fields: [{name: a, start: 1, width: 4}, {name: b, start: 5, width: 6}]\n")
    _read_all(data, {"fixed_width": {"layout": "layout.yaml", "encoding": encoding}, "compression": "none"}, tmp_path)


@FUZZ
@given(data=_bytes)
def test_jsonl_reader(data: bytes, tmp_path: Path) -> None:
    _read_all(data, {"jsonl": {}, "compression": "none"}, tmp_path)


@FUZZ
@given(data=_bytes, wrap=st.booleans())
def test_xml_reader(data: bytes, wrap: bool, tmp_path: Path) -> None:
    _read_all(b"<?xml version='1.0'?><Doc>" + data + b"</Doc>" if wrap else data,
              {"xml": {"records": "Row"}, "compression": "none"}, tmp_path)


@FUZZ
@given(data=_bytes, kind=st.sampled_from(["gzip", "zip", "parquet"]))
def test_compressed_and_parquet_readers(data: bytes, kind: str, tmp_path: Path) -> None:
    if kind == "parquet":
        _read_all(data, {"parquet": {}, "compression": "none"}, tmp_path)
    else:
        _read_all(gzip.compress(data)[: len(data) + 10] if kind == "gzip" else data,
                  {"jsonl": {}, "compression": kind}, tmp_path)


def test_xml_entities_are_refused(tmp_path: Path) -> None:
    bomb = (b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;'>]>"
            b"<Doc><Row>&b;</Row></Doc>")
    assert _read_all(bomb, {"xml": {"records": "Row"}, "compression": "none"}, tmp_path) == []
    ext = b"<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><Doc><Row>&x;</Row></Doc>"
    with pytest.raises(HubError):
        list(_formats.read(_write(tmp_path / "x.xml", ext), FormatConfig.model_validate({"xml": {"records": "Row"}})))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- REST responses ------------------------------------------------------------------------------------

def _rest(max_bytes: int = 10_000) -> RestSource:
    system = RestSystemConfig.model_validate({"base_url": "http://fuzz.invalid/api", "retries": {"max": 0},
                                              "max_response_bytes": max_bytes})
    return RestSource(system, RestSourceConfig.model_validate({"request": {"path": "/x"}, "records": "$.items[*]"}))


def _fetch(source: RestSource, handler: Any) -> Any:
    async def main() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await source.fetch(client, PageRequest(source.url))

    return asyncio.run(main())


@FUZZ
@given(body=st.binary(max_size=300) | st.recursive(
    st.none() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=10), lambda i: st.lists(i, max_size=3)
    | st.dictionaries(st.sampled_from(["items", "x", "next"]), i, max_size=3), max_leaves=15).map(
    lambda v: __import__("orjson").dumps(v)),
       status=st.sampled_from([200, 200, 200, 400, 404, 500]),
       ctype=st.sampled_from(["application/json", "text/html", ""]))
def test_rest_random_bodies(body: bytes, status: int, ctype: str) -> None:
    source = _rest()
    try:
        page = _fetch(source, lambda request: httpx.Response(status, content=body,
                                                             headers={"Content-Type": ctype} if ctype else {}))
    except HubError as exc:
        assert str(exc)
        return
    assert isinstance(page.records, list)
    source._to_batches(page)


def test_rest_oversized_response_is_refused() -> None:
    source = _rest(max_bytes=1000)
    big = b'{"items": [' + b",".join([b'{"a": 1}'] * 500) + b"]}"
    with pytest.raises(HubError, match="max_response_bytes=1000"):
        _fetch(source, lambda request: httpx.Response(200, content=big))

    async def stream() -> Any:  # no Content-Length: counted while streaming
        for _ in range(100):
            yield b" " * 100

    with pytest.raises(HubError, match="exceeds max_response_bytes=1000"):
        _fetch(source, lambda request: httpx.Response(200, content=stream()))


@pytest.mark.parametrize("text", [
    "pipeline: p\nsources: &x {a: *x}\n",                                # a recursive alias
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(                # "billion laughs": 10^8 values
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)),
    "[" * 5000 + "]" * 5000,                                             # nested too deeply
])
def test_spec_loader_refuses_hostile_yaml(text: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"not a usable YAML document|not valid YAML"):
        loads(text, tmp_path / "hostile.yaml")


# --- SOAP responses ------------------------------------------------------------------------------------

def _soap_rows(erp: Any, **system: Any) -> list[dict[str, Any]]:
    from tests.test_soap import orders_source, rows

    return rows(orders_source(erp, **system))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(cut=st.integers(0, 3000), junk=st.binary(max_size=60), mode=st.sampled_from(["truncate", "splice", "random"]))
def test_soap_random_bodies(erp: Any, cut: int, junk: bytes, mode: str) -> None:
    def rewrite(body: bytes) -> bytes:
        at = min(cut, len(body))
        if mode == "truncate":
            return body[:at]
        if mode == "splice":
            return body[:at] + junk + body[at + len(junk):]
        return junk

    erp.rewrite = rewrite
    try:
        _soap_rows(erp, retries={"max": 0})
    except HubError as exc:
        assert str(exc)
    finally:
        erp.rewrite = None


def test_soap_oversized_response_and_wsdl_are_refused(erp: Any) -> None:
    from adapters.soap._transport import HttpxTransport

    # the WSDL is about 11 kB, a page of 100 orders about 47 kB: the response is refused, streamed to its limit
    with pytest.raises(HubError, match=r"POST .*/erp: response of \d+ bytes exceeds max_response_bytes=20000"):
        _soap_rows(erp, max_response_bytes=20_000, params={"PageSize": 100})
    with httpx.Client() as http, pytest.raises(HubError, match="exceeds max_response_bytes=5000 while loading"):
        HttpxTransport(http, max_bytes=5000).load(erp.wsdl_url)


# --- file names from a drop --------------------------------------------------------------------------------

class _Entry:
    def __init__(self, name: str, directory: bool = False) -> None:
        import stat

        self.filename = name
        self.attrs = type("Attrs", (), {"permissions": (stat.S_IFDIR if directory else stat.S_IFREG) | 0o644,
                                        "size": 10, "mtime": 1_700_000_000})()


def test_hostile_file_names_never_leave_the_folder(tmp_path: Path) -> None:
    """A server listing names with separators (``../../etc/passwd``, ``/etc/shadow``) in a folder: they are not
    files of the folder and are never listed, so never read, archived or deleted; the local copy of a file
    is always a fresh name in the spool."""
    from adapters.sftp._session import SftpSession
    from adapters.sftp.config import SftpSystemConfig

    hostile = ["../../etc/passwd", "/etc/shadow", "..", ".", "sub/../../x.csv", "a\\..\\..\\b.csv", "ok\x00.csv"]
    listing = {"/drop": [_Entry(n) for n in [*hostile, "good.csv"]] + [_Entry("sub", directory=True)],
               "/drop/sub": [_Entry("../../../root/.ssh/id_rsa"), _Entry("nested.csv")]}

    class FakeSftp:
        async def readdir(self, path: str | bytes) -> list[_Entry]:  # the session lists with bytes names
            return listing[path.decode() if isinstance(path, bytes) else path]

    session = SftpSession(SftpSystemConfig.model_validate(
        {"host": "127.0.0.1", "username": "u", "password": "p", "insecure_accept_any_host_key": True}))
    session._call = lambda what, op: asyncio.run(op(FakeSftp()))  # type: ignore[method-assign]
    for recursive in (False, True):
        files = session.list_files("/drop", "*", recursive=recursive)
        assert [f.path for f in files] == (["/drop/good.csv", "/drop/sub/nested.csv"] if recursive
                                           else ["/drop/good.csv"])
        assert all(f.path.startswith("/drop/") and ".." not in f.path.split("/") for f in files)


# --- SQL in templated parameters -----------------------------------------------------------------------------

PAYLOAD = "'; DROP TABLE victims; --"


def _sql_rows(url: str) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    from adapters.sql import SqlSource, SqlSourceConfig, SqlSystemConfig
    from hub.runtime.window import Window, render_tree

    window = Window(key=PAYLOAD, start=datetime(2024, 1, 1, tzinfo=UTC), end=datetime(2024, 1, 2, tzinfo=UTC))
    src = render_tree({"query": "select name from victims where name = :name",
                       "params": {"name": "{{ partition.key }}"}}, window, field="sources.q")
    assert src["params"]["name"] == PAYLOAD
    source = SqlSource(SqlSystemConfig.model_validate({"url": url}), SqlSourceConfig.model_validate(src), name="q")
    return [r for b in source.batches() for r in b.to_pylist()]


def _victims(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("create table victims (name text)"))
        conn.execute(sa.text("insert into victims values (:a), (:b)"), [{"a": PAYLOAD, "b": "x"}])
    engine.dispose()


def test_templated_sql_parameters_are_bound_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v.sqlite'}"
    _victims(url)
    assert _sql_rows(url) == [{"name": PAYLOAD}]
    assert _sql_rows(url) == [{"name": PAYLOAD}], "the table is still there"


def test_templated_sql_parameters_are_escaped_for_adbc_on_postgresql(pg_url: str) -> None:
    import sqlalchemy as sa

    from adapters.sql.client import _literal_sql

    rendered = _literal_sql(sa.text("select name from victims where name = :name"), {"name": PAYLOAD})
    assert rendered == "select name from victims where name = '''; DROP TABLE victims; --'"
    _victims(pg_url)
    assert _sql_rows(pg_url) == [{"name": PAYLOAD}]
    assert _sql_rows(pg_url) == [{"name": PAYLOAD}], "the table is still there"
