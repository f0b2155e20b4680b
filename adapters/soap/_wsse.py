"""WS-Security UsernameToken with a fresh wsu:Timestamp on every message.

zeep's ``UsernameToken`` takes one timestamp element at construction, which would be stale (and moved
between envelopes) after the first call; here a new Created/Expires pair is made per message, and a new
nonce and Created for PasswordDigest, as the UsernameToken Profile 1.1 requires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from zeep.wsse import utils
from zeep.wsse.username import UsernameToken

from hub.runtime.secrets import register


class UsernameTokenWithTimestamp(UsernameToken):
    def __init__(self, username: str, password: str, *, digest: bool, timestamp_ttl: int | None) -> None:
        register(password)
        super().__init__(username, password, use_digest=digest, zulu_timestamp=True)
        self.timestamp_ttl = timestamp_ttl

    def apply(self, envelope: Any, headers: dict[str, str]) -> tuple[Any, dict[str, str]]:
        if self.timestamp_ttl:
            now = datetime.now(UTC)
            self.timestamp_token = utils.WSU.Timestamp(
                utils.WSU.Created(utils.get_timestamp(now, zulu_timestamp=True)),
                utils.WSU.Expires(utils.get_timestamp(now + timedelta(seconds=self.timestamp_ttl),
                                                      zulu_timestamp=True)))
        return super().apply(envelope, headers)
