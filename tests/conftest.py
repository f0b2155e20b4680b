"""Shared fixtures: the demo CRM as a real HTTP service, and isolated warehouses / Dagster homes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.demo.crm import DEMO_TOKEN, CRMService

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "pipelines" / "demo.yaml"


@pytest.fixture
def crm(monkeypatch: pytest.MonkeyPatch) -> Iterator[CRMService]:
    """The demo CRM on a free loopback port, with the env vars the demo spec reads."""
    with CRMService(port=0) as service:
        monkeypatch.setenv("CRM_TOKEN", DEMO_TOKEN)
        monkeypatch.setenv("HUB_DEMO_CRM_URL", service.url)
        yield service


@pytest.fixture
def warehouse_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "wh" / "hub.duckdb"
    monkeypatch.setenv("HUB_WAREHOUSE", f"duckdb:///{path}")
    return path


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def demo_spec_text(fast_retries: bool = True) -> str:
    """The demo spec, with quick retries so failure tests do not wait for real backoff."""
    text = DEMO_SPEC.read_text()
    if fast_retries:
        text = text.replace("retries: {max: 5, backoff: 0.5}", "retries: {max: 1, backoff: 0.01}")
        assert "backoff: 0.01" in text, "demo spec retries line changed; update the test helper"
    return text
