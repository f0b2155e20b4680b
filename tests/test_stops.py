"""SIGTERM or SIGINT to a `hub` command stops every process it started within 10 s (issue 20): `hub ui` runs
`dagster dev`, which starts a code server, a webserver and a daemon; none may survive `hub ui`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from hub.cli.children import GRACE
from tests.conftest import state_env

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_hub_ui_stops_dagster_dev_and_all_its_processes(tmp_path: Path, signum: int) -> None:
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(REPO), **state_env(tmp_path / "hub"),
           "HUB_WAREHOUSE": f"duckdb:///{tmp_path / 'wh.duckdb'}"}  # nothing in the checkout's warehouse/ or .hub/
    proc = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "ui", "--no-demo", "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while True:  # the webserver answers once dagster dev has started its processes
            assert proc.poll() is None, "hub ui exited on its own"
            assert time.monotonic() < deadline, "the Dagster webserver never answered"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3, [c.cmdline() for c in children]  # dagster dev, webserver, daemon, code server
        started = time.monotonic()
        proc.send_signal(signum)
        # dagster dev gets GRACE seconds, then its process group is killed: all gone by then, with room for a
        # loaded machine (2.5 s of it was once not enough under the parallel suite)
        limit = GRACE + 5
        proc.wait(timeout=limit + 5)
        _gone, alive = psutil.wait_procs(children, timeout=max(0.1, limit - (time.monotonic() - started)))
        assert time.monotonic() - started <= limit
        assert alive == [], [p.cmdline() for p in alive]
        assert proc.returncode == 128 + signum
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in psutil.Process().children(recursive=True):
            child.kill()
