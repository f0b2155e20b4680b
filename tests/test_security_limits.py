"""Limits that keep a spec or a partner's API from exhausting a run: templates rendered with size, work and
time limits (and checked by ``hub validate``), a default ``paginate.max_pages`` and a time budget per source
(``max_duration``), each against real loopback peers."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.rest import RestSource, RestSourceConfig, RestSystemConfig
from adapters.rest.config import DEFAULT_MAX_PAGES
from adapters.soap import SoapSourceConfig
from hub.cli.main import app
from hub.demo.erp import ERPService
from hub.errors import HubError, ResponseFormatError, TimeBudgetExceeded
from hub.materialize import materialize_source
from hub.runtime.window import render, sample_window
from hub.spec import loader
from hub.spec.models import DEFAULT_MAX_DURATION, SourceSpec
from tests.conftest import REPO
from tests.rest_server import LoggedRequest, Reply, RestTestServer
from tests.test_soap import orders_source

FAST = {"max": 1, "backoff": 0.01}

#: Template bombs: each one hangs or exhausts a run on a plain Jinja sandbox; (template, words of the error).
BOMBS = {
    "power": ("{{ 9**(9**9) }}", "4,096"),
    "repeat": ("{{ 'a'*2000000000 }}", "65,536"),
    "range": ("{{ range(10**9)|list }}", "10,000"),
    "center": ("{{ 'x'|center(10**9) }}", "65,536"),
    "typo": ("{{ partition.strat }}", "partition.start_date"),
}


# --- a REST API that never stops paging ------------------------------------------------------------------

class ForeverServer(RestTestServer):
    """The loopback test server plus ``/forever``: one record and a new cursor on every page, forever
    (``delay`` seconds per page)."""

    def __init__(self) -> None:
        super().__init__()
        self._routes["/forever"] = self._forever

    def _forever(self, req: LoggedRequest) -> Reply:
        at = int((req.param("cursor") or "c0")[1:])
        return Reply(200, {"data": [{"id": at}], "meta": {"next_cursor": f"c{at + 1}"}},
                     delay=float(req.param("delay") or 0))


@pytest.fixture
def forever() -> Iterator[ForeverServer]:
    with ForeverServer() as server:
        yield server


CURSOR = {"cursor": {"param": "cursor", "cursor_path": "$.meta.next_cursor"}}


def rest(server: RestTestServer, path: str, *, params: dict[str, Any] | None = None,
         paginate: dict[str, Any] | None = None, max_duration: float | None = None) -> RestSource:
    system = RestSystemConfig.model_validate({"base_url": server.url, "retries": FAST})
    source = RestSourceConfig.model_validate({"request": {"path": path, "params": params or {}},
                                              "records": "$.data[*]", "paginate": paginate})
    budget = {"max_duration": max_duration} if max_duration is not None else {}
    return RestSource(system, source, name="events", **budget)


def test_endless_cursor_stops_at_max_pages_with_a_clear_error(forever: ForeverServer) -> None:
    src = rest(forever, "/forever", paginate={**CURSOR, "max_pages": 25})
    started = time.monotonic()
    with pytest.raises(ResponseFormatError) as exc:
        list(src.batches())
    message = str(exc.value)
    assert "more than paginate.max_pages=25 pages" in message
    assert "raise `paginate.max_pages` on sources.events" in message, "says how to raise it"
    assert len(forever.requests("/forever")) == 25, "stopped right at the limit"
    assert time.monotonic() - started < 10


def test_max_pages_has_a_finite_default() -> None:
    cfg = RestSourceConfig.model_validate({"paginate": CURSOR})
    assert cfg.paginate is not None and cfg.paginate.max_pages == DEFAULT_MAX_PAGES == 10_000
    assert "10,000" in (type(cfg.paginate).model_fields["max_pages"].description or "")
    soap = SoapSourceConfig.model_validate({"operation": "GetOrders", "records": "Order",
                                            "paginate": {"token": {"param": "T", "element": "Next"}}})
    assert soap.paginate is not None and soap.paginate.max_pages == 10_000
    assert RestSourceConfig.model_validate({"paginate": {**CURSOR, "max_pages": 50_000}}).paginate.max_pages == 50_000


# --- time budget per source -------------------------------------------------------------------------------

def test_rest_time_budget_stops_a_long_walk(forever: ForeverServer) -> None:
    src = rest(forever, "/forever", params={"delay": 0.05}, paginate=CURSOR, max_duration=1.0)
    started = time.monotonic()
    with pytest.raises(TimeBudgetExceeded, match=r"sources\.events: extraction stopped after max_duration=1s"):
        list(src.batches())
    assert time.monotonic() - started < 5
    assert 5 < len(forever.requests("/forever")) < DEFAULT_MAX_PAGES


def test_rest_time_budget_stops_a_stalled_response(forever: ForeverServer) -> None:
    src = rest(forever, "/slow", params={"delay": 8}, max_duration=0.5)
    started = time.monotonic()
    with pytest.raises(TimeBudgetExceeded, match=r"max_duration=0\.5s \(0 pages"):
        list(src.batches())
    assert time.monotonic() - started < 4, "the budget does not wait for the slow page"


def test_soap_time_budget(erp: ERPService) -> None:
    src = orders_source(erp, params={"PageSize": 2})
    src.name, src.max_duration = "orders", 1.0
    erp.delay_next.extend([0.4] * 20)
    started = time.monotonic()
    with pytest.raises(TimeBudgetExceeded, match=r"sources\.orders: extraction stopped after max_duration=1s"):
        list(src.batches())
    assert time.monotonic() - started < 4


def test_max_duration_in_the_spec_stops_the_source(forever: ForeverServer, tmp_path: Path) -> None:
    spec = f"""
pipeline: budget
warehouse: duckdb:///{tmp_path / "wh.duckdb"}
systems: {{api: {{rest: {{base_url: "{forever.url}", retries: {{max: 1, backoff: 0.01}}}}}}}}
sources:
  events:
    system: api
    max_duration: 1s
    request: {{path: /forever, params: {{delay: 0.05}}}}
    records: $.data[*]
    paginate: {{cursor: {{cursor_path: $.meta.next_cursor}}}}
"""
    pipeline = loader.loads(spec, tmp_path / "budget.yaml")
    assert pipeline.sources["events"].spec.max_duration == 1.0
    assert SourceSpec(system="x").max_duration == DEFAULT_MAX_DURATION == 6 * 3600
    with pytest.raises(TimeBudgetExceeded, match=r"sources\.events: .*max_duration=1s.*nothing was loaded"):
        materialize_source(pipeline, "events", window=None, run_id="budget-1")


# --- templates: hub validate ------------------------------------------------------------------------------

def spec_with(tmp_path: Path, template: str, *, partitions: str = "{daily: {start: 2024-03-01}}") -> Path:
    path = tmp_path / "bomb.yaml"
    path.write_text(textwrap.dedent(f"""\
        pipeline: bomb
        partitions: {partitions}
        systems:
          api: {{rest: {{base_url: "http://127.0.0.1:9"}}}}
        sources:
          events:
            system: api
            records: $.data[*]
            request:
              path: /events
              params:
                x: {json.dumps(template)}
        """))
    return path


@pytest.mark.parametrize("name", list(BOMBS))
def test_validate_reports_template_bombs(name: str, tmp_path: Path) -> None:
    template, words = BOMBS[name]
    spec = spec_with(tmp_path, template)
    tracemalloc.start()
    started = time.monotonic()
    try:
        result = CliRunner().invoke(app, ["validate", str(spec)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 64 * 1024 * 1024, f"validate used {peak:,} bytes"
    assert result.exit_code == 1, result.output
    assert "line 12: sources.events.request.params.x: " in result.output, "file line and field"
    assert str(spec) in result.output
    assert words in result.output


def test_validate_lists_the_names_and_suggests_one(tmp_path: Path) -> None:
    with pytest.raises(HubError) as exc:
        loader.load(spec_with(tmp_path, "{{ partition.strat }}"))
    message = str(exc.value)
    assert "did you mean partition.start?" in message
    for name in ("partition.key", "partition.start", "partition.end", "partition.start_date", "partition.end_epoch"):
        assert name in message


def test_validate_refuses_loops_and_checks_monthly_and_unpartitioned_specs(tmp_path: Path) -> None:
    with pytest.raises(HubError, match=r"\{% for %\} is not allowed"):
        loader.load(spec_with(tmp_path, "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}"
                                        "{% endfor %}"))
    ok = loader.load(spec_with(tmp_path, "{{ partition.start_dt | strftime('%Y%m') }}",
                               partitions="{monthly: {start: 2024-03-01}}"))
    assert ok.sources["events"].partitioned
    with pytest.raises(HubError, match=r"params\.x: .*65,536"):
        loader.load(spec_with(tmp_path, "{{ 'ab'*99999 }}", partitions="none"))


def test_validate_checks_every_templated_string_and_export_paths(tmp_path: Path) -> None:
    path = tmp_path / "more.yaml"
    path.write_text(textwrap.dedent("""\
        pipeline: more
        partitions: {daily: {start: 2024-01-01}}
        systems:
          api: {rest: {base_url: "http://127.0.0.1:9"}}
          drop: {sftp: {host: 127.0.0.1, username: u, password: p, known_hosts: /dev/null}}
        sources:
          events:
            system: api
            records: $.data[*]
            request:
              headers: {X-Day: "{{ 'x' * 10**9 }}"}
        exports:
          out:
            system: drop
            table: events
            format: {csv: {}}
            path: "/out/{{ run.dte }}.csv"
        """))
    with pytest.raises(HubError) as exc:
        loader.load(path)
    message = str(exc.value)
    assert "line 11: sources.events.request.headers.X-Day: " in message
    assert "line 17: exports.out.path: " in message and "run.date" in message


# --- templates at run time ----------------------------------------------------------------------------------

_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a bomb fails here instead of taking the host
from hub.runtime.window import render, sample_window
try:
    render(sys.argv[1], sample_window(), field="sources.events.request.params.x")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("name", list(BOMBS))
def test_rendering_refuses_template_bombs_at_run_time(name: str) -> None:
    """Rendered in a child with 1 GiB of address space and a timeout, so the unguarded code fails the test
    (MemoryError, timeout) instead of hurting the machine."""
    template, words = BOMBS[name]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _CHILD, template], cwd=REPO, capture_output=True, text=True,
                          timeout=20, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("HubError sources.events.request.params.x: "), proc.stdout
    assert words in proc.stdout
    assert time.monotonic() - started < 10


def test_rendering_refuses_more_bombs_and_keeps_ordinary_templates_working() -> None:
    window = sample_window("daily")
    assert render("{{ partition.start_dt | strftime('%Y%m%d') }}", window, field="f") == "20240101"
    assert render("{{ partition.key.replace('-', '') }}-{{ '%03d' % 7 }}", window, field="f") == "20240101-007"
    assert render("{% if partition.start_epoch > 0 %}{{ 2**64 }}{% endif %}", window, field="f") == str(2**64)
    assert len(render("{{ range(10000)|join(',') }}", window, field="f")) == 48_889
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for bomb in ("{{ range(10000)|map('center', 60000)|list }}", "{{ ['x'*60000]*10000 }}",
                 "{{ 'ab'|replace('', 'y'*60000) }}", "{{ '{:>999999999}'.format(1) }}", "{{ '%999999999d' % 5 }}",
                 "{{ (1).to_bytes(10**9, 'big') }}", "{{ 'a'.translate({97: 'b'*60000}) }}",
                 "{{ [1]|batch(10**9, 'x')|list }}", "{{ [1]|slice(10**9)|list }}", "{{ lipsum(10**9) }}",
                 "{{ 'a\\nb'|indent(10**9) }}", "{{ 'x'.ljust(10**9) }}", "{{ 'x'|center(1000000000) }}",
                 "{{ [{'a': 1}]*5000|join('y'*60000, attribute='a') }}", "{{ range(5000)|join('y'*60000) }}",
                 "{{ ('y'*60000).join(range(5000)|map('string')) }}", "{{ 'x'|wordwrap(1, wrapstring='y'*60000) }}"):
        with pytest.raises(HubError, match=r"^f: "):
            render(bomb, window, field="f")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024, "less than 200 MB more"
