"""Which documents a WSDL may pull in: its own origin, and what the system explicitly trusts besides.

A WSDL names further documents — ``wsdl:import location``, ``xs:import``/``xs:include``/``xs:redefine
schemaLocation`` — and zeep fetches whatever they name. Left alone, a WSDL served over HTTP could make the
hub read local files (``file:///etc/shadow``: the error tells whether it exists, a readable schema shows up
in the catalog) or reach hosts the WSDL's server cannot reach itself. The rule here is the browser's: a
document may pull in documents of the same origin as the WSDL the system names, resolved relative to the
importing document —

- a WSDL fetched over http(s) imports only from its scheme, host and port (never ``file:``, never another
  host or port);
- a WSDL read from a file imports only files inside its own folder (after resolving ``..`` and symlinks;
  no absolute path elsewhere, no http);

and from the origins and folders listed in the system's ``allowed_origins``. The check runs on the URL
before anything is opened or sent, so a refusal is the same whether the refused file exists or not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from adapters._http import DEFAULT_PORTS
from hub.errors import XMLSecurityError
from hub.runtime.secrets import mask_url

Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, default ports filled in; None for anything else or a URL
    that does not parse (a bad port)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port


def show_origin(origin: Origin) -> str:
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if DEFAULT_PORTS[scheme] == port else f":{port}")


def local_path(url: str) -> Path | None:
    """The file a location names (a plain path or a ``file:`` URL on this host), None when it names
    something else (http, another scheme, a ``file:`` URL of another host)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return None
        return Path(url2pathname(unquote(parts.path)))
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a path (or a Windows drive letter)
        return Path(url)
    return None


@dataclass(frozen=True)
class ImportPolicy:
    """The documents one WSDL load may read. :meth:`check` is called for every document after the WSDL."""

    wsdl: str  # as shown in errors (masked)
    origins: frozenset[Origin]
    folders: tuple[Path, ...]  # resolved
    rule: str  # the rule, in words, for the error

    @classmethod
    def for_wsdl(cls, location: str, allowed: Iterable[str] = (), base_dir: Path | None = None) -> ImportPolicy:
        """The policy of the WSDL at *location* (a URL or a file), widened by the system's *allowed*
        origins (``https://host[:port]``) and folders (relative ones below *base_dir*)."""
        origins: set[Origin] = set()
        folders: list[Path] = []
        for entry in allowed:
            origin = origin_of(entry)
            if origin is not None:
                origins.add(origin)
                continue
            path = local_path(entry)
            if path is None:
                raise ValueError(f"allowed_origins: {entry!r} is neither an http(s) origin nor a local folder")
            folders.append(_resolve(path if path.is_absolute() or base_dir is None else base_dir / path))
        extra = sorted(show_origin(o) for o in origins) + [str(f) for f in folders]
        also = f" (or from allowed_origins: {', '.join(extra)})" if extra else ""
        own = origin_of(location)
        if own is not None:
            rule = (f"a WSDL loaded from {show_origin(own)} may import only documents of that origin (same scheme, "
                    f"host and port; never local files){also}")
            origins.add(own)
        else:
            path = local_path(location)
            if path is None:
                raise ValueError(f"WSDL {mask_url(location)}: neither an http(s) URL nor a file")
            folder = _resolve(path.parent)  # imports resolve next to the WSDL as named (it may be a symlink)
            rule = (f"a WSDL read from a file may import only files inside its folder {folder} (no '..', "
                    f"absolute paths or symlinks leading out, no http){also}")
            folders.insert(0, folder)
        return cls(wsdl=mask_url(location), origins=frozenset(origins), folders=tuple(folders),
                   rule=rule + "; list further trusted origins or folders in the system's soap.allowed_origins")

    def check(self, url: str) -> Path | None:
        """Refuse *url* unless the policy allows it; the file to read for a local document (symlinks
        resolved: read that, not *url*), None for an http(s) one."""
        origin = origin_of(url)
        if origin is not None:
            if origin in self.origins:
                return None
        else:
            path = local_path(url)
            if path is not None:
                real = _resolve(path)
                if any(real.is_relative_to(folder) for folder in self.folders):
                    return real
        raise XMLSecurityError(f"WSDL {self.wsdl}: import of {mask_url(url)} refused: {self.rule}")

    def allows_redirect(self, source: str, target: str) -> bool:
        """Whether a document at *source* may be fetched from where its server redirects (*target*): an
        allowed origin, or the same host upgraded to https."""
        to, frm = origin_of(target), origin_of(source)
        if to is None:
            return False
        return to in self.origins or (frm is not None and to[0] == "https" and to[1] == frm[1])


def _resolve(path: Path) -> Path:
    """*path* absolute with ``..`` and symlinks resolved (it need not exist). ``~`` is not expanded: it
    is a folder named ``~``."""
    return Path(os.path.realpath(path))
