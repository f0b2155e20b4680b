"""HTTP caching of GET responses for reference data (``cache: {ttl: 1h}`` on a REST system).

A response is stored under a key that hashes the URL, the query parameters and the *identity* the
request was made with (a hash of the auth settings and headers), so two credentials never share an entry
and no secret is ever written in clear: the files are named by the hash and hold only the body, the
validators (``ETag``, ``Last-Modified``) and the content type. Within ``ttl`` a stored response is served
without a request; after it, the request carries ``If-None-Match`` / ``If-Modified-Since`` and a ``304``
serves the stored body (and starts a new ``ttl``). ``Cache-Control: no-store`` responses are not kept.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

_KEPT = ("content-type", "etag", "last-modified", "link")


@dataclass
class Entry:
    key: str
    headers: dict[str, str]
    body: bytes
    stored_at: float

    def validators(self) -> dict[str, str]:
        out = {}
        if "etag" in self.headers:
            out["If-None-Match"] = self.headers["etag"]
        if "last-modified" in self.headers:
            out["If-Modified-Since"] = self.headers["last-modified"]
        return out


class HttpCache:
    def __init__(self, directory: Path, ttl: float, identity: Any) -> None:
        self.directory, self.ttl = directory, ttl
        self.identity = hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def key(self, url: str, params: dict[str, Any] | None) -> str:
        full = str(httpx.URL(url).copy_merge_params(params) if params else httpx.URL(url))
        return hashlib.sha256(f"{self.identity}\n{full}".encode()).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.directory / f"{key}.json", self.directory / f"{key}.body"

    def lookup(self, key: str) -> Entry | None:
        meta, body = self._paths(key)
        try:
            info = orjson.loads(meta.read_bytes())
            return Entry(key, info["headers"], body.read_bytes(), info["stored_at"])
        except (OSError, ValueError, KeyError):
            return None

    def fresh(self, entry: Entry) -> bool:
        return time.time() - entry.stored_at < self.ttl

    def store(self, key: str, headers: httpx.Headers, body: bytes) -> None:
        if "no-store" in headers.get("cache-control", "").lower():
            return
        kept = {k: headers[k] for k in _KEPT if k in headers}
        self._write(key, kept, body)

    def touch(self, entry: Entry, headers: httpx.Headers) -> None:
        """A 304: the stored body is current again (validators may have been updated)."""
        entry.headers.update({k: headers[k] for k in ("etag", "last-modified") if k in headers})
        self._write(entry.key, entry.headers, None)

    def _write(self, key: str, headers: dict[str, str], body: bytes | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        meta, body_path = self._paths(key)
        if body is not None:  # the body first: a reader never sees new metadata with an old body
            _atomic(body_path, body)
        _atomic(meta, orjson.dumps({"headers": headers, "stored_at": time.time()}))

    @staticmethod
    def response(entry: Entry, request: httpx.Request) -> httpx.Response:
        """The stored response as a 200 for *request* (pagination reads its headers, e.g. ``Link``)."""
        return httpx.Response(200, headers=entry.headers, content=entry.body, request=request)


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
