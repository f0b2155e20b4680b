"""WS-Security UsernameToken with a fresh wsu:Timestamp on every message.

zeep's ``UsernameToken`` takes one timestamp element at construction, which would be stale (and moved
between envelopes) after the first call; here a new Created/Expires pair is made per message, and a new
nonce and Created for PasswordDigest, as the UsernameToken Profile 1.1 requires.
"""

from __future__ import annotations

import copy
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
        """Sign *envelope* with a timestamp of its own. The timestamp goes on a copy of this token, never on
        the token itself: a flow sends from several threads through one token, and an element stored on it
        between two threads' calls would be moved from one envelope into the other (lxml keeps one parent)."""
        if not self.timestamp_ttl:
            return super().apply(envelope, headers)
        now = datetime.now(UTC)
        token = copy.copy(self)
        token.timestamp_token = utils.WSU.Timestamp(
            utils.WSU.Created(utils.get_timestamp(now, zulu_timestamp=True)),
            utils.WSU.Expires(utils.get_timestamp(now + timedelta(seconds=self.timestamp_ttl), zulu_timestamp=True)))
        return UsernameToken.apply(token, envelope, headers)
