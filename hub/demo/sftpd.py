"""An SFTP server in the process (asyncssh), for the demo estate and for machines without OpenSSH.

It serves a local folder (chrooted) on a loopback port, with a generated Ed25519 host key, and accepts a
password and/or authorized public keys. Real SSH and SFTP protocol: the hub's adapter cannot tell it from
OpenSSH.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import asyncssh


class _Auth(asyncssh.SSHServer):
    def __init__(self, username: str, password: str | None, live: set[Any]) -> None:
        self.username, self.password, self.live = username, password, live
        self.conn: Any = None

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        self.live.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return self.password is not None

    def validate_password(self, username: str, password: str) -> bool:
        return username == self.username and password == self.password


class EmbeddedSftpServer:
    """Serve *root* over SFTP on 127.0.0.1:*port* (0 picks a free port). Use as a context manager."""

    def __init__(self, root: Path, *, port: int = 0, username: str = "hub", password: str | None = None,
                 authorized_keys: list[str] | None = None, host_key: asyncssh.SSHKey | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.username, self.password = username, password
        self.authorized_keys = authorized_keys
        self.host_key = host_key or asyncssh.generate_private_key("ssh-ed25519")
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedded-sftpd", daemon=True)
        self._server: Any = None
        self._live: set[Any] = set()  # open client connections: stop() closes them, as a real shutdown would

    @property
    def port(self) -> int:
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def fingerprint(self) -> str:
        """SHA256 fingerprint of the host key, as a spec pins it."""
        return str(self.host_key.get_fingerprint("sha256"))

    def known_hosts_line(self) -> str:
        key = self.host_key.export_public_key("openssh").decode().strip()
        return f"[127.0.0.1]:{self.port} {key}\n"

    def start(self) -> EmbeddedSftpServer:
        self._thread.start()
        root = str(self.root).encode()

        async def serve() -> Any:
            return await asyncssh.create_server(
                lambda: _Auth(self.username, self.password, self._live), "127.0.0.1", self._port,
                server_host_keys=[self.host_key],
                authorized_client_keys=asyncssh.import_authorized_keys("".join(self.authorized_keys))
                if self.authorized_keys else None,
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root), allow_scp=False,
                encryption_algs=["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                 "chacha20-poly1305@openssh.com", "aes128-ctr", "aes256-ctr"])

        self._server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for conn in list(self._live):
                conn.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> EmbeddedSftpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
