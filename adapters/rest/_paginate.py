"""Pagination strategies.

Each strategy builds the first request and, from the first response, decides how to go on:

* when the response declares the total (total pages / total count), every remaining page is known up
  front and is returned as a list, which the client fetches **concurrently**;
* otherwise the strategy walks page by page (`next_request`) until the API says there is no more.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx

from adapters.rest._jsonpath import first
from adapters.rest.config import PaginateConfig
from hub.errors import ResponseFormatError
from hub.runtime.secrets import mask, mask_url


@dataclass(frozen=True)
class PageRequest:
    """One request to make: an absolute URL (or path) and query parameters."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # page number / offset / cursor, for messages and checkpoints


@dataclass
class Paginator:
    cfg: PaginateConfig | None
    url: str
    params: dict[str, Any]
    _seen_cursors: set[str] = field(default_factory=set)

    def first_request(self) -> PageRequest:
        c = self.cfg
        params = dict(self.params)
        if c is None:
            return PageRequest(self.url, params, "1")
        if c.page_number:
            params[c.page_number.param] = c.page_number.start
            if c.page_number.size_param and c.page_number.size:
                params[c.page_number.size_param] = c.page_number.size
            return PageRequest(self.url, params, str(c.page_number.start))
        if c.offset:
            params[c.offset.offset_param] = c.offset.start
            params[c.offset.limit_param] = c.offset.limit
            return PageRequest(self.url, params, str(c.offset.start))
        return PageRequest(self.url, params, "first")

    def remaining_known(self, first_req: PageRequest, doc: Any) -> list[PageRequest] | None:
        """All remaining requests when the first response declares the total, else None."""
        c = self.cfg
        if c is None:
            return []
        if c.page_number and (c.page_number.total_pages or c.page_number.total_count):
            p = c.page_number
            if p.total_pages:
                pages = _int_at(p.total_pages, doc, first_req)
            else:
                assert p.total_count is not None and p.size is not None
                pages = math.ceil(_int_at(p.total_count, doc, first_req) / p.size)
            return [
                PageRequest(self.url, {**first_req.params, p.param: n}, str(n))
                for n in range(p.start + 1, p.start + pages)
            ]
        if c.offset and c.offset.total:
            o, total_path = c.offset, c.offset.total
            total = _int_at(total_path, doc, first_req)
            return [
                PageRequest(self.url, {**first_req.params, o.offset_param: off}, str(off))
                for off in range(o.start + o.limit, total, o.limit)
            ]
        return None

    def next_request(self, prev: PageRequest, response: httpx.Response, doc: Any,
                     n_records: int) -> PageRequest | None:
        """The request after *prev*, or None when the API says this was the last page."""
        c = self.cfg
        if c is None:
            return None
        if c.page_number:
            p = c.page_number
            if n_records == 0 or (p.size and n_records < p.size):
                return None
            n = int(prev.params[p.param]) + 1
            return PageRequest(self.url, {**prev.params, p.param: n}, str(n))
        if c.offset:
            o = c.offset
            if n_records == 0 or n_records < o.limit:
                return None
            off = int(prev.params[o.offset_param]) + o.limit
            return PageRequest(self.url, {**prev.params, o.offset_param: off}, str(off))
        if c.cursor:
            cursor = first(c.cursor.cursor_path, doc)
            if cursor in (None, ""):
                return None
            cursor = str(cursor)
            if cursor in self._seen_cursors:
                raise ResponseFormatError(
                    f"{prev.url}: cursor '{cursor}' at {c.cursor.cursor_path} was already returned; "
                    "the API is looping, stopping instead of fetching forever"
                )
            self._seen_cursors.add(cursor)
            return PageRequest(self.url, {**self.params, c.cursor.param: cursor}, cursor)
        if c.next_url:
            nxt = first(c.next_url.path, doc)
            return self._follow(str(nxt), response) if nxt else None
        if c.link_header:
            link = response.links.get(c.link_header.rel)
            return self._follow(link["url"], response) if link and link.get("url") else None
        return None

    def _follow(self, url: str, response: httpx.Response) -> PageRequest:
        absolute = urljoin(str(response.request.url), url)
        if absolute in self._seen_cursors:
            raise ResponseFormatError(f"next page URL {absolute} was already fetched; the API is looping")
        self._seen_cursors.add(absolute)
        return PageRequest(absolute, {}, absolute)

    # --- checkpoints (hub.runtime.checkpoint) ------------------------------------------------------------

    def stable(self) -> bool:
        """True when the API itself says where to go on (cursor, next URL, Link header): such a position
        stays valid while the data moves. Page numbers and offsets shift when rows are added or removed."""
        c = self.cfg
        return c is None or bool(c.cursor or c.next_url or c.link_header)

    def _param(self) -> str | None:
        c = self.cfg
        if c is None:
            return None
        if c.page_number:
            return c.page_number.param
        if c.offset:
            return c.offset.offset_param
        return c.cursor.param if c.cursor else None

    def token_for(self, nxt: PageRequest | None) -> dict[str, Any] | None:
        """The resume token for continuing with *nxt* (None: the walk is over). Only the position is kept
        (never the other parameters, which may carry credentials); None when the position itself holds a
        registered secret (a next URL echoing an API key), which is then not written to disk."""
        if nxt is None:
            return {"kind": "done", "at": "the end (every page was spooled)"}
        param = self._param()
        if param is not None:
            value = nxt.params[param]
            return {"kind": "param", "param": param, "value": value, "at": f"{param}={value}"}
        if mask(nxt.url) != nxt.url:
            return None
        return {"kind": "url", "url": nxt.url, "at": f"next URL {mask_url(nxt.url)}"}

    def known_tokens(self, known: list[PageRequest]) -> list[dict[str, Any]]:
        """For pages fetched concurrently: the token after each of *known* (the rest of the list)."""
        param = self._param()
        assert param is not None, "only page and offset paging declare totals"
        values = [int(r.params[param]) for r in known]
        step = values[1] - values[0] if len(values) > 1 else 1
        # The pages are an arithmetic series (page n.., offset k, k+limit..): kept as start/step/count, so a
        # token stays a few bytes however many pages remain.
        assert all(b - a == step for a, b in itertools.pairwise(values)), values
        out: list[dict[str, Any]] = []
        for i in range(len(values)):
            left = len(values) - i - 1
            out.append({"kind": "known", "param": param, "start": values[i] + step, "step": step, "count": left,
                        "at": f"{param}={values[i] + step}"} if left
                       else {"kind": "done", "at": "the end (every page was spooled)"})
        return out

    def resume(self, token: dict[str, Any]) -> tuple[PageRequest | None, list[PageRequest] | None]:
        """The request to continue a sequential walk with, or the remaining known pages, from *token*."""
        kind = token.get("kind")
        if kind == "url":
            url = str(token["url"])
            self._seen_cursors.add(url)
            return PageRequest(url, {}, url), None
        param = str(token.get("param"))
        if param != self._param():
            raise ResponseFormatError(f"{self.url}: the checkpoint continues with {param!r}, which this source's "
                                      "pagination does not use")
        base = self.first_request().params if not (self.cfg and self.cfg.cursor) else dict(self.params)
        if kind == "known":
            start, step, count = int(token["start"]), int(token["step"]), int(token["count"])
            return None, [PageRequest(self.url, {**base, param: v}, str(v))
                          for v in range(start, start + step * count, step)]
        value = token["value"]
        if self.cfg and self.cfg.cursor:
            self._seen_cursors.add(str(value))
        return PageRequest(self.url, {**base, param: value}, str(value)), None


def _int_at(path: str, doc: Any, req: PageRequest) -> int:
    value = first(path, doc)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ResponseFormatError(
            f"{req.url}: expected an integer at {path} in the first page, got {value!r}"
        ) from None
    if n < 0:
        raise ResponseFormatError(f"{req.url}: negative total {n} at {path}")
    return n
