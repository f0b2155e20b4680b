"""What the stream protocols' plugins (nats, mqtt, kafka) share: spec checks and path handling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hub.protocols import SourceCheck
from hub.runtime.settings import TlsSettings

if TYPE_CHECKING:
    from hub.spec.models import ResolvedSource


def stream_only(check: SourceCheck) -> bool:
    """Stream sources are never partitioned by time (messages are batched as they come)."""
    if check.source.partitioned:
        check.problem(("partitioned",), "a stream source takes messages as they come; it is not partitioned by time")
    return False


def max_deliver(source: ResolvedSource, default: int) -> int:
    """The source's delivery limit (``max_deliver``, a key every stream source has), else *default*."""
    keys = source.stream  # the hub's keys of a stream source (hub.spec.stream.StreamKeys)
    return int(keys.max_deliver) if keys is not None and keys.max_deliver else default


def rooted_tls(tls: TlsSettings, root: Path) -> TlsSettings:
    """*tls* with its relative file paths taken from the project root."""
    update = {k: str(root / v) for k in ("ca_file", "cert", "key")
              if (v := getattr(tls, k)) and not Path(v).is_absolute()}
    return tls.model_copy(update=update) if update else tls
