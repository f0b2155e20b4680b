"""The Dagster UI in a real browser: what a user of ``hub ui`` sees and clicks.

GraphQL tests (``tests/test_ui_e2e.py``) prove the server side; this one proves that the pages render
the hub's code location (the asset graph of the demo pipeline, an asset's page with its description,
checks and metadata) and that the UI's own "Materialize" button launches a run that succeeds. Headless
Chromium is Debian's ``/usr/bin/chromium`` driven by Playwright; Playwright's browser download is never
used (the test is skipped, saying why, when that binary is missing). Screenshots of each step are kept
in ``reports/ui-*.png`` for a human to look at.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

from tests.conftest import DEMO_ESTATE
from tests.dagster_ui import REPO, DagsterDev, dagster_dev, demo_estate, run_failures, runs, wait_for, wait_run

#: Runs `dagster dev` over the demo spec, whose stream sensors drain the demo's fixed RabbitMQ queue and hold its
#: MQTT session: one such demo at a time (tests/conftest.py, DEMO_ESTATE).
pytestmark = [pytest.mark.xdist_group(DEMO_ESTATE), pytest.mark.slow, pytest.mark.timeout(420)]

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "reports"
ASSET = "inventory_warehouses"  # unpartitioned and quick: one SQL table, merged on its key
TIMEOUT_MS = 90_000  # the first page load compiles the asset graph; the machine may be small and busy


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium package; .ci/run installs it); "
                    "Playwright's own browser download is deliberately not used")
    root = tmp_path_factory.mktemp("ui_browser")
    with demo_estate(root, bank_days=0) as estate, dagster_dev(root, estate) as server:
        # a fresh instance greets its first visitor with a newsletter dialog over every page; a user clicks
        # it away once, the test tells the server it has been seen
        assert server.gql("mutation { setNuxSeen }")["setNuxSeen"] is True
        yield server


def test_materialize_from_the_asset_page(dev: DagsterDev) -> None:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("ui-*.png"):
        old.unlink()
    with sync_playwright() as pw:
        # CI containers run as root, where the sandbox refuses to start, and have a small /dev/shm
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1200})
            page.set_default_timeout(TIMEOUT_MS)
            try:
                _walk_through(page, dev)
            except Exception:
                page.screenshot(path=str(SHOTS / "ui-failure.png"))  # what the page showed when it failed
                raise
        finally:
            browser.close()
    shots = sorted(p.name for p in SHOTS.glob("ui-*.png"))
    assert shots == ["ui-asset-graph.png", "ui-asset-materialized.png", "ui-asset.png", "ui-launched.png",
                     "ui-run.png"]
    for shot in SHOTS.glob("ui-*.png"):
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"


def _walk_through(page: Page, dev: DagsterDev) -> None:
    """Asset graph -> asset page -> Materialize -> the run succeeds -> its page; a screenshot at each step."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # the asset graph: every source and model of the demo pipeline is a node
    page.goto(f"{dev.url}/asset-groups", wait_until="domcontentloaded")
    for name in ("crm_customers", "erp_orders", "bank_statements", "revenue_by_region", ASSET):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Loading...")).to_have_count(0)  # each node's live data has arrived
    page.screenshot(path=str(SHOTS / "ui-asset-graph.png"))

    # the asset's page: its description (from the spec) and the Materialize button
    page.goto(f"{dev.url}/assets/{ASSET}", wait_until="domcontentloaded")
    expect(page.get_by_text("Distribution centres (reference data, merged on id).").first).to_be_visible()
    button = page.get_by_role("button", name=re.compile(r"^(materialization )?Materialize$"))  # icon + label
    expect(button).to_be_enabled()
    page.screenshot(path=str(SHOTS / "ui-asset.png"))
    before = {r["runId"] for r in runs(dev.gql)}
    button.click()

    # the click launched a run of exactly this asset (seen through GraphQL, not the toast)
    def launched() -> dict[str, Any] | None:
        new = [r for r in runs(dev.gql) if r["runId"] not in before]
        return new[0] if new else None

    run = wait_for("the run the Materialize button launches", launched, timeout_s=60)
    assert [a["path"] for a in run["assetSelection"]] == [[ASSET]]
    page.screenshot(path=str(SHOTS / "ui-launched.png"))
    run = wait_run(dev.gql, run["runId"], timeout_s=240)
    assert run["status"] == "SUCCESS", run_failures(dev.gql, run["runId"])

    # the run's page shows it succeeded, and the asset's page its materialization with the hub's metadata
    page.goto(f"{dev.url}/runs/{run['runId']}", wait_until="domcontentloaded")
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text("Loading run logs...")).to_have_count(0)
    expect(page.get_by_text("Succeeded (0)")).to_have_count(0)  # the step list has caught up with the logs
    page.screenshot(path=str(SHOTS / "ui-run.png"))
    page.goto(f"{dev.url}/assets/{ASSET}", wait_until="domcontentloaded")
    expect(page.get_by_text("hub/table_rows").first).to_be_visible()
    expect(page.get_by_text("hub/rows_loaded").first).to_be_visible()  # the materialization's own metadata
    expect(page.get_by_text("Never materialized")).to_have_count(0)
    page.screenshot(path=str(SHOTS / "ui-asset-materialized.png"), full_page=True)
    assert not errors, f"JavaScript errors on the pages: {errors}"
