"""Pipeline runs started over HTTP (``POST /runs``): each is a ``hub run`` subprocess of its own.

A subprocess, not a run inside the server: a run holds the DuckDB file and may take hours, and the server
must keep answering webhooks meanwhile (and stop on SIGTERM without killing a run half way). ``hub run``
records the run like any other (``hub runs``; its materializations reported to the project's Dagster instance,
docs/operations.md#hub-run); the server keeps, per request, the process, its exit code and its log
(``.hub/serve/runs/<id>.log``)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.spec.loader import Pipeline


@dataclass
class LaunchedRun:
    id: str
    pipeline: str
    partition: str | None
    assets: list[str]
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.time)

    def status(self) -> str:
        code = self.process.poll()
        return "running" if code is None else "succeeded" if code == 0 else "failed"

    def describe(self, tail: int = 4000) -> dict[str, Any]:
        text = ""
        if self.log.exists():
            with self.log.open("rb") as fh:
                fh.seek(max(0, self.log.stat().st_size - tail))
                text = fh.read().decode("utf-8", "replace")
        return {"run_id": self.id, "pipeline": self.pipeline, "partition": self.partition, "assets": self.assets,
                "status": self.status(), "exit_code": self.process.poll(), "started": self.started,
                "log": str(self.log), "log_tail": text}


class RunLauncher:
    """Starts ``hub run`` subprocesses and remembers them for ``GET /runs/{id}``."""

    def __init__(self) -> None:
        self.runs: dict[str, LaunchedRun] = {}
        self._lock = threading.Lock()

    def launch(self, pipeline: Pipeline, *, partition: str | None, assets: list[str]) -> LaunchedRun:
        run_id = uuid.uuid4().hex
        log = pipeline.root / ".hub" / "serve" / "runs" / f"{run_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "hub.cli.main", "run", str(pipeline.path)]
        if partition:
            command += ["--partition", partition]
        for asset in assets:
            command += ["--asset", asset]
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=pipeline.root, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        run = LaunchedRun(run_id, pipeline.name, partition, assets, command, log, process)
        with self._lock:
            self.runs[run_id] = run
        return run

    def running(self) -> list[LaunchedRun]:
        return [r for r in self.runs.values() if r.status() == "running"]

    def wait(self, timeout: float) -> None:
        """Give running runs *timeout* seconds to finish (the server is stopping; they are not killed)."""
        deadline = time.monotonic() + timeout
        for run in self.running():
            try:
                run.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return
