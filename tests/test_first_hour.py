"""What a new user hit in the first hour (issue 15), each reproduced: pipelines that overwrote each other's
tables, validation that needed several passes or crashed, URLs printed three slashes short."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.errors import SpecError
from hub.materialize import materialize_model, materialize_source
from hub.owners import TableOwnedError
from hub.runtime.secrets import mask_url
from hub.spec import load
from hub.warehouse import DuckDBWarehouse
from tests.rest_server import RestTestServer


def _spec(pipeline: str, url: str, warehouse: Path, *, model_sql: str = "select count(*) n from things") -> str:
    return textwrap.dedent(f"""\
        pipeline: {pipeline}
        warehouse: duckdb:///{warehouse}
        systems:
          api: {{rest: {{base_url: "{url}"}}}}
        sources:
          things:
            system: api
            request: {{path: /pages, params: {{n: 3}}}}
            records: $.data[*]
            primary_key: [id]
        models:
          summary: {{sql: "{model_sql}"}}
        """)


def test_validate_checks_the_specs_of_a_project_together(tmp_path: Path) -> None:
    (tmp_path / "workspace.yaml").write_text("load_from: []\n")
    folder = tmp_path / "pipelines"
    folder.mkdir()
    wh = tmp_path / "wh.duckdb"
    (folder / "demo.yaml").write_text(_spec("demo", "http://127.0.0.1:1", wh))
    (folder / "revenue.yaml").write_text(_spec("revenue", "http://127.0.0.1:1", wh))
    for given in (["pipelines/revenue.yaml"], ["pipelines/demo.yaml", "pipelines/revenue.yaml"]):
        result = CliRunner().invoke(app, ["validate", *[str(tmp_path / g) for g in given]])
        assert result.exit_code == 1, result.output
        assert "'things' is also an asset of pipeline 'demo'" in result.output
        assert "line 6: sources.things" in result.output and "'summary' is also an asset" in result.output
    from hub.dagster import build_definitions
    with pytest.raises(SpecError, match="is also an asset of pipeline"):
        build_definitions(folder)


def test_a_table_of_another_pipeline_is_never_replaced(tmp_path: Path) -> None:
    wh = tmp_path / "shared.duckdb"
    with RestTestServer() as server:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        (tmp_path / "a" / "demo.yaml").write_text(_spec("demo", server.url, wh))
        (tmp_path / "b" / "revenue.yaml").write_text(_spec("revenue", server.url, wh, model_sql="select 1 x"))
        demo, revenue = load(tmp_path / "a" / "demo.yaml"), load(tmp_path / "b" / "revenue.yaml")
        materialize_source(demo, "things", window=None, run_id="r1")
        materialize_model(demo, "summary", run_id="r1")
        with pytest.raises(TableOwnedError) as err:
            materialize_model(revenue, "summary", run_id="r2")
        assert "belongs to pipeline 'demo'" in str(err.value) and "revenue.yaml" in str(err.value)
        with pytest.raises(TableOwnedError):
            materialize_source(revenue, "things", window=None, run_id="r2")
        materialize_source(demo, "things", window=None, run_id="r3")  # its owner still loads it
    table = DuckDBWarehouse(f"duckdb:///{wh}")
    assert table.query("select n from summary").to_pylist() == [{"n": 3}]  # the demo's shape, not `x`
    owners = table.query("select table_name, pipeline from _hub_tables order by 1").to_pylist()
    assert owners == [{"table_name": "summary", "pipeline": "demo"}, {"table_name": "things", "pipeline": "demo"}]


def test_an_impossible_date_is_a_problem_with_its_line_not_a_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text("pipeline: p\npartitions: {daily: {start: 2024-13-01}}\nsources: {}\n")
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 1
    assert "line 2" in result.output and "'2024-13-01' is not a valid date" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_every_problem_is_reported_in_one_pass(tmp_path: Path) -> None:
    spec = tmp_path / "p.yaml"
    spec.write_text(textwrap.dedent("""\
        pipeline: things
        partitions: {daily: {start: 2024-01-01}}
        systems:
          api: {rest: {base_url: "http://127.0.0.1:1/api", retries: {max: "x"}}}
          ok: {rest: {base_url: "http://127.0.0.1:1/api"}}
        sources:
          things:
            system: ok
            request: {path: /things, params: {since: "{{ partition.strat }}"}}
            records: $.data[*]
            paginate: {page_numbr: {param: page}}
            max_bad_rowz: 3
          broken:
            system: ok
            records: "$.data[?"
          other:
            system: nope
        """))
    with pytest.raises(SpecError) as err:
        load(spec)
    text = "\n".join(err.value.problems)
    assert "systems.api.rest.retries.max" in text
    assert "sources.things.paginate.page_numbr: unknown field" in text
    assert "sources.things.max_bad_rowz: unknown field" in text
    assert "sources.things.request.params.since" in text and "did you mean partition.start" in text
    assert "sources.broken.records: invalid JSONPath" in text  # a second-pass check, reached in the first
    assert "unknown system 'nope'" in text
    assert len(err.value.problems) == len(set(err.value.problems))  # each once


@pytest.mark.parametrize("url", ["sqlite:////tmp/inventory/inventory.sqlite", "duckdb:///abs/wh.duckdb",
                                 "sqlite:///relative.db"])
def test_printed_database_urls_work_when_pasted(url: str) -> None:
    assert mask_url(url) == url


@pytest.mark.slow
def test_a_plan_written_next_to_the_demo_takes_none_of_its_names(crm: object, tmp_path: Path) -> None:
    import shutil

    from tests.conftest import REPO

    project = tmp_path / "project"
    shutil.copytree(REPO / "pipelines", project / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "contracts", project / "contracts")
    (project / "workspace.yaml").write_text((REPO / "workspace.yaml").read_text())
    out = project / "pipelines" / "revenue.yaml"
    result = CliRunner().invoke(app, ["agent", "plan", "every morning load yesterday's ERP orders, join CRM "
                                      "customers and give me revenue per region", "--spec",
                                      str(project / "pipelines" / "demo.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "renamed erp_orders to revenue_erp_orders" in out.read_text()
    checked = CliRunner().invoke(app, ["validate", str(project / "pipelines" / "demo.yaml"), str(out)])
    assert checked.exit_code == 0, checked.output
    revenue = load(out)
    assert not set(revenue.asset_names()) & set(load(project / "pipelines" / "demo.yaml").asset_names())


def test_validate_says_where_a_spec_outside_a_project_keeps_its_state(tmp_path: Path) -> None:
    """A spec outside any project keeps its warehouse, state, contracts and reports beside itself; the README
    said 'next to workspace.yaml' and one user's audit rows ended up in two warehouses. validate says where."""
    loose = tmp_path / "loose"
    loose.mkdir()
    spec = loose / "p.yaml"
    spec.write_text(_spec("p", "http://127.0.0.1:1", Path("wh.duckdb")).replace("duckdb:////", "duckdb:///")
                    .replace("warehouse: duckdb:///wh.duckdb\n", ""))
    result = CliRunner().invoke(app, ["validate", str(spec)], env={"HUB_WAREHOUSE": ""})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert f"project root {loose}" in text
    assert f"warehouse duckdb:///{loose}/warehouse/hub.duckdb" in text
    assert f"contracts {loose}/contracts" in text and f"reports {loose}/reports" in text
