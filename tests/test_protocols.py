"""The protocol registry (hub/protocols): built-ins, lookups, and a third-party protocol that plugs in through
the ``hub.protocols`` entry-point group without editing the hub — spec validation with its own models and
error locations, materialization into the warehouse, and ``hub catalog``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hub import protocols
from hub.errors import HubError, ProtocolError
from hub.spec import loads
from hub.spec.models import SystemConfig

REPO = Path(__file__).resolve().parents[1]

#: A whole protocol, as a third party would ship it: JSON-lines files in a folder (system), one per source.
PLUGIN = '''
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from hub.protocols import ExtractRun, Protocol, SourceCheck
from hub.runtime.settings import SystemSettings


class JsonlSystem(SystemSettings):
    folder: str = Field(description="Folder of the files, relative to the project.")


class JsonlSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str


class Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def batches(self):
        import json
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        yield pa.RecordBatch.from_pylist(rows)

    def details(self) -> dict[str, Any]:
        return {"file": self.path.name}


class JsonlProtocol(Protocol):
    name = "jsonl"
    system_model = JsonlSystem
    source_model = JsonlSource
    renders_templates = False

    def check_source(self, check: SourceCheck) -> None:
        if not check.config.file.endswith(".jsonl"):
            check.problem(("file",), "expected a .jsonl file")

    def extractor(self, run: ExtractRun) -> Reader:
        system = self.resolve_system(run.source.system_name, run.source.system)
        return Reader(run.pipeline.root / system.folder / run.source.config.file)

    def endpoint(self, source) -> str:
        return f"{source.system.config.folder}/{source.config.file}"


PROTOCOL = JsonlProtocol()
'''

SCRIPT = '''
import json, sys
from hub import protocols
from hub.errors import SpecError
from hub.materialize import materialize_source
from hub.spec import load, loads
from hub.warehouse import connect

out = {"names": list(protocols.names())}
pipeline = load(sys.argv[1])
outcome = materialize_source(pipeline, "people", window=None, run_id="r1")
out["rows"] = outcome.load.rows_loaded
out["table"] = connect(pipeline.warehouse_url).query("SELECT id, name FROM people ORDER BY id").to_pylist()
out["endpoint"] = pipeline.sources["people"].protocol.endpoint(pipeline.sources["people"])
try:
    loads(sys.argv[2], pipeline.path)
except SpecError as exc:
    out["problems"] = exc.problems
print(json.dumps(out))
'''

BAD = """\
pipeline: bad
systems:
  files: {jsonl: {folder: data, bogus: 1}}
  ok: {jsonl: {folder: data}}
sources:
  people: {system: ok, file: people.csv}
"""


def test_builtins_are_registered_in_order() -> None:
    assert protocols.names()[:4] == ("rest", "soap", "sftp", "sql")
    assert [p.name for p in protocols.all()][:4] == ["rest", "soap", "sftp", "sql"]
    assert list(SystemConfig.model_fields)[:4] == ["rest", "soap", "sftp", "sql"]


def test_unknown_protocol_is_named_with_the_known_ones() -> None:
    with pytest.raises(ProtocolError, match=r"unknown protocol 'gopher' \(known: rest, soap, sftp, sql"):
        protocols.get("gopher")
    assert issubclass(ProtocolError, HubError)


def test_source_carries_its_protocol_and_config(tmp_path: Path) -> None:
    pipeline = loads("""\
pipeline: p
systems: {db: {sql: {url: "sqlite:///x.db"}}}
sources:
  t: {system: db, table: t, incremental: {cursor: updated_at}, primary_key: id}
""", tmp_path / "p.yaml")
    source = pipeline.sources["t"]
    assert source.kind == "sql" and source.protocol is protocols.get("sql")
    assert source.config.table == "t" and source.incremental and not source.per_file
    assert source.system.config is source.system.sql


def test_a_third_party_protocol_plugs_in_through_its_entry_point(tmp_path: Path) -> None:
    """A distribution that declares ``[project.entry-points."hub.protocols"] jsonl = ...`` adds a protocol:
    its system block validates with its model (errors at systems.x.jsonl.field), its spec checks run, and
    its sources materialize into the warehouse — with no change to the hub."""
    site = tmp_path / "site"
    (site / "hub_jsonl").mkdir(parents=True)
    (site / "hub_jsonl" / "__init__.py").write_text(PLUGIN)
    dist = site / "hub_jsonl-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hub-jsonl\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hub.protocols]\njsonl = hub_jsonl:PROTOCOL\n")
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "people.jsonl").write_text('{"id": 1, "name": "Ada"}\n{"id": 2, "name": "Grace"}\n')
    (project / "pyproject.toml").write_text("")
    spec = project / "people.yaml"
    spec.write_text(textwrap.dedent(f"""\
        pipeline: people
        warehouse: duckdb:///{project / 'w.duckdb'}
        systems:
          files: {{jsonl: {{folder: data}}}}
        sources:
          people: {{system: files, file: people.jsonl, primary_key: id}}
        """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)]), "HUB_STATE_DIR": str(tmp_path)}
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(spec), BAD], env=env, capture_output=True, text=True,
                         timeout=240, cwd=project)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["names"][:4] == ["rest", "soap", "sftp", "sql"] and "jsonl" in out["names"]
    assert out["rows"] == 2
    assert out["table"] == [{"id": 1, "name": "Ada"}, {"id": 2, "name": "Grace"}]
    assert out["endpoint"] == "data/people.jsonl"
    problems = "\n".join(out["problems"])
    assert "line 3: systems.files.jsonl.bogus: unknown field" in problems
    assert "line 6: sources.people.file: expected a .jsonl file" in problems


def test_a_protocol_without_a_capability_says_so(tmp_path: Path) -> None:
    """Hooks a protocol does not implement fail with a message naming the protocol, not a KeyError."""
    pipeline = loads("""\
pipeline: p
systems: {drop: {sftp: {host: 127.0.0.1, username: u, password: p, insecure_accept_any_host_key: true}}}
sources:
  f: {system: drop, files: {path: /in, glob: "*.csv"}, format: {csv: {}}}
""", tmp_path / "p.yaml")
    source = pipeline.sources["f"]
    with pytest.raises(ProtocolError, match="protocol sftp does not extract by partition"):
        source.protocol.extractor(protocols.ExtractRun(pipeline, source, None))
    assert protocols.get("rest").collect.__qualname__.startswith("RestProtocol")


def test_graphql_plugs_in_with_one_plugin_module(tmp_path: Path) -> None:
    """hub/protocols/graphql/ is all GraphQL needed: a spec with a graphql system validates (errors at
    systems.x.graphql.field), its source materializes through the registry, and hub catalog lists it."""
    from typer.testing import CliRunner

    from hub.cli.main import app
    from hub.materialize import materialize_source
    from hub.warehouse import connect
    from tests.graphql_server import GraphQLTestServer, items, items_schema

    assert "graphql" in protocols.names()
    with GraphQLTestServer(items_schema(items(25))) as server:
        pipeline = loads(f"""\
pipeline: g
warehouse: duckdb:///{tmp_path / 'w.duckdb'}
systems:
  shop: {{graphql: {{endpoint: "{server.url}"}}}}
sources:
  items:
    system: shop
    query: |
      query Items($after: String) {{
        items(first: 10, after: $after) {{ nodes {{ id name price }} pageInfo {{ hasNextPage endCursor }} }}
      }}
    records: items.nodes
    paginate: {{relay: {{}}}}
    primary_key: id
""", tmp_path / "g.yaml")
        source = pipeline.sources["items"]
        assert source.kind == "graphql" and source.protocol.endpoint(source) == f"{server.url} Items"
        outcome = materialize_source(pipeline, "items", window=None, run_id="r1")
        assert outcome.load.rows_loaded == 25
        assert connect(pipeline.warehouse_url).query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 25}]
        res = CliRunner().invoke(app, ["catalog", "graphql", server.url])
        assert res.exit_code == 0, res.output
        assert "read  items(" in res.output
    with pytest.raises(HubError, match=r"line 2: systems.shop.graphql.endpont: unknown field"):
        loads("pipeline: g\nsystems: {shop: {graphql: {endpont: x}}}\n", tmp_path / "bad.yaml")
