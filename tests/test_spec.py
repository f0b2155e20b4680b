"""Pipeline spec loading: valid specs resolve; invalid ones report every problem with file, line, field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.rest import RestSystemConfig
from hub.errors import HubError, SecretError, SpecError
from hub.runtime.secrets import address_fields, mask, resolve, resolve_tree
from hub.runtime.window import Window, render, render_tree
from hub.spec import load, loads
from tests.conftest import DEMO_SPEC

GOOD = """\
pipeline: shop
partitions: {daily: {start: 2024-01-01, timezone: Europe/Paris}}
systems:
  api:
    rest:
      base_url: http://127.0.0.1:1/api
      auth: {api_key: {name: key, value: "${SHOP_KEY}", in: query}}
sources:
  orders:
    system: api
    request: {path: /orders, params: {from: "{{ partition.start }}", to: "{{ partition.end }}"}}
    records: $.orders[*]
    paginate: {offset: {limit: 100, total: $.count}}
    primary_key: id
    columns: {id: {type: int64}, "customer.id": customer_id, total: {type: "decimal(10,2)"}}
  products:
    system: api
    request: {path: /products}
    primary_key: [sku]
models:
  revenue:
    sql: select o.customer_id, sum(o.total) as revenue from orders o join products p on true group by 1
"""


def test_demo_spec_is_valid() -> None:
    p = load(DEMO_SPEC)
    assert p.name == "demo"
    assert set(p.sources) == {"crm_customers", "crm_products", "crm_contacts", "erp_orders", "bank_statements",
                              "inventory_warehouses", "inventory_levels", "erp_order_events", "inventory_movements",
                              "bank_payment_events"}
    assert p.sources["bank_payment_events"].kind == "webhook" and p.sources["bank_payment_events"].stream is not None
    assert p.sources["crm_products"].kind == "graphql" and not p.sources["crm_products"].partitioned
    assert p.sources["erp_order_events"].kind == "amqp" and p.sources["erp_order_events"].stream is not None
    assert p.sources["inventory_movements"].kind == "mqtt" and not p.sources["inventory_movements"].partitioned
    assert p.sources["inventory_levels"].incremental and not p.sources["inventory_levels"].partitioned
    assert p.sources["inventory_levels"].kind == "sql"
    assert p.sources["bank_statements"].per_file and not p.sources["bank_statements"].partitioned
    assert p.sources["crm_contacts"].partitioned and not p.sources["crm_customers"].partitioned
    assert p.sources["erp_orders"].partitioned and p.sources["erp_orders"].kind == "soap"
    assert p.model_deps["contacts_by_region"] == ["crm_contacts", "crm_customers"]
    assert p.model_deps["revenue_by_region"] == ["crm_customers", "erp_orders"]
    assert p.tables() == ["crm_customers", "crm_products", "crm_contacts", "erp_orders", "erp_order_lines",
                          "bank_statements", "inventory_warehouses", "inventory_levels", "erp_order_events",
                          "inventory_movements", "bank_payment_events"]
    assert p.model_deps["stock_cover"] == ["crm_customers", "erp_order_lines", "erp_orders", "inventory_levels",
                                           "inventory_warehouses"]
    assert p.export_deps == {"open_orders_to_bank": ["order_payments"]}


def test_good_spec_resolves(tmp_path: Path) -> None:
    p = loads(GOOD, tmp_path / "shop.yaml")
    orders = p.sources["orders"]
    assert orders.partitioned, "templated request makes the source partitioned"
    assert not p.sources["products"].partitioned
    assert orders.spec.primary_key == ["id"], "a single key may be written as a string"
    assert orders.spec.output_columns() == ["id", "customer_id", "total"]
    assert orders.kind == "rest" and orders.config.paginate is not None
    assert orders.config.paginate.kind == "offset"
    assert p.model_deps["revenue"] == ["orders", "products"]
    assert p.spec.partitions is not None and p.spec.partitions.window.timezone == "Europe/Paris"


def test_all_problems_reported_at_once_with_file_line_and_field(tmp_path: Path) -> None:
    bad = """\
pipeline: bad-name
partitions: {weekly: {start: 2024-01-01}}
schedule: "every day"
systems:
  crm:
    rest:
      base_url: http://x
      auth: {bearer: a, basic: {username: u, password: p}}
      concurrency: 0
sources:
  a:
    system: nope
    request: {path: /a}
  b:
    system: crm
    reqest: {path: /b}
    columns: {id: {type: integr}}
models:
  m:
    sql: select * from a join zzz using (id)
"""
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    with pytest.raises(SpecError) as info:
        load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ")
    expected = [
        "line 1: pipeline: expected an identifier",
        "line 2: partitions.weekly: unknown field",
        "line 3: schedule: 'every day' is not a valid cron expression",
        "line 8: systems.crm.rest.auth: expected exactly one of: bearer, api_key, basic, oauth2",
        "line 9: systems.crm.rest.concurrency: Input should be greater than or equal to 1",
        "line 12: sources.a.system: unknown system 'nope' (systems: crm)",
        "line 16: sources.b.reqest: unknown field",
        "line 17: sources.b.columns.id.type: unknown type 'integr'",
        "line 20: models.m.sql: reads unknown table(s) zzz",
    ]
    for fragment in expected:
        assert fragment in text, f"missing {fragment!r} in:\n{text}"
    assert len(info.value.problems) == len(expected), text
    assert "valid string" not in text, "union-member noise must be filtered"


def test_second_pass_problems(tmp_path: Path) -> None:
    text = GOOD.replace("primary_key: id", "primary_key: ident").replace(
        "records: $.orders[*]", "records: $.orders[?(@.x ==]").replace(
        "sum(o.total) as revenue from", "sum(o.total as revenue from")
    with pytest.raises(SpecError) as info:
        loads(text, tmp_path / "shop.yaml")
    msg = str(info.value)
    assert "sources.orders.primary_key: 'ident' is not one of the declared columns (id, customer_id, total)" in msg
    assert "sources.orders.records: invalid JSONPath" in msg
    assert "models.revenue.sql: SQL does not parse" in msg


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        loads("pipeline: x\nsources: {a: [1, 2}\n", tmp_path / "broken.yaml")
    assert "broken.yaml" in str(info.value) and "line 2" in str(info.value)


def test_duplicate_keys_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        loads(GOOD.replace("  products:\n", "  orders:\n", 1), tmp_path / "dup.yaml")
    assert "sources.orders: key given twice" in str(info.value)


def test_templating_requires_partitions(tmp_path: Path) -> None:
    text = GOOD.replace("partitions: {daily: {start: 2024-01-01, timezone: Europe/Paris}}\n", "")
    with pytest.raises(SpecError) as info:
        loads(text, tmp_path / "s.yaml")
    assert "sources.orders.request.params.from" in str(info.value)
    assert "partitions: none" in str(info.value)


def test_secret_resolution_and_masking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TEST_SECRET", "s3cr3t-value-123")
    assert resolve("Bearer ${HUB_TEST_SECRET}", field="auth.bearer") == "Bearer s3cr3t-value-123"
    assert mask("token=s3cr3t-value-123") == "token=***"
    assert resolve("${HUB_UNSET_VAR:-fallback}", field="x") == "fallback"
    with pytest.raises(SecretError, match=r"systems.crm.rest.auth.bearer: environment variable HUB_NOPE"):
        resolve_tree({"auth": {"bearer": "${HUB_NOPE}"}}, field="systems.crm.rest")


def test_addresses_are_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TEST_URL", "http://127.0.0.1:9999/some/api")
    out = resolve_tree({"base_url": "${HUB_TEST_URL}"}, field="systems.x.rest",
                       addresses=address_fields(RestSystemConfig))
    assert out["base_url"] == "http://127.0.0.1:9999/some/api"
    assert mask("calling http://127.0.0.1:9999/some/api") == "calling http://127.0.0.1:9999/some/api"


def test_a_protocol_declares_its_address_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config model marks its addresses (``Address``, also optional, in lists and nested models); every
    other resolved value is a secret, and so is a name marked in one model and plain text in another."""
    from pydantic import BaseModel

    from hub.runtime.secrets import Address, resolve_config

    class Auth(BaseModel):
        user: Address
        token: str

    class Mirror(BaseModel):
        name: str  # "name" is plain text here ...

    class Named(BaseModel):
        name: Address  # ... and an address here: a secret, when in doubt

    class System(BaseModel):
        endpoint: Address
        mirrors: list[Address] = []
        auth: Auth | None = None
        backup: Mirror | None = None
        alias: Named | None = None

    assert address_fields(System) == {"endpoint", "mirrors", "user"}
    env = {"HUB_T_HOST": "http://10.1.2.3:81", "HUB_T_MIRROR": "http://10.9.9.9:82", "HUB_T_USER": "svc-reader-7",
           "HUB_T_TOKEN": "tok-41af99e0c2", "HUB_T_NAME": "n4me-7731"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = resolve_config(System(endpoint="${HUB_T_HOST}/api", mirrors=["${HUB_T_MIRROR}"],
                                auth=Auth(user="${HUB_T_USER}", token="${HUB_T_TOKEN}"),
                                alias=Named(name="${HUB_T_NAME}")), field="systems.x.thing")
    assert cfg.endpoint == "http://10.1.2.3:81/api" and cfg.auth is not None and cfg.auth.token == "tok-41af99e0c2"
    shown = "http://10.1.2.3:81/api http://10.9.9.9:82 svc-reader-7"
    assert mask(shown) == shown
    assert mask("token tok-41af99e0c2, name n4me-7731") == "token ***, name ***"


def test_partition_templates() -> None:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    w = Window("2024-03-01", start, datetime(2024, 3, 2, tzinfo=UTC))
    assert render("{{ partition.start }}", w, field="f") == "2024-03-01T00:00:00+00:00"
    assert render("{{ partition.end_date }}", w, field="f") == "2024-03-02"
    assert render("{{ partition.start_dt | strftime('%Y%m%d') }}", w, field="f") == "20240301"
    assert render_tree({"a": ["{{ partition.key }}"]}, w, field="f") == {"a": ["2024-03-01"]}
    with pytest.raises(HubError, match=r"f\.x: cannot render template"):
        render_tree({"x": "{{ partition.strat }}"}, w, field="f")
    with pytest.raises(HubError, match="has no partitions"):
        render("{{ partition.start }}", None, field="g")


@pytest.mark.parametrize("cron", ["0 6 * * *", "*/15 * * * 1-5", "0 0 1 * *", "0 0 30 2 *", "0 0 31 2 *",
                                  "0 0 29 2 *", "@daily", "@hourly", "0 6 * * * *", "every day", "61 * * * *",
                                  "0 0 * * 7", "0 12 L * *", "0 9 * * MON-FRI", "0 0 1,15 * *", ""])
def test_cron_check_agrees_with_dagster(cron: str) -> None:
    """The spec checks schedules without importing Dagster; it must accept exactly what Dagster accepts."""
    import dagster as dg

    from hub.spec.models import _valid_cron

    try:
        dg.ScheduleDefinition(name="x", cron_schedule=cron, job_name="x")
        dagster_ok = True
    except dg.DagsterInvalidDefinitionError:
        dagster_ok = False
    assert _valid_cron(cron) == dagster_ok
