"""Real SFTP servers for tests: OpenSSH's sshd on a free loopback port (when installed) and the embedded
asyncssh server. Both are reached through the same small interface, so every test runs on both."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from hub.demo.sftpd import EmbeddedSftpServer

KEY_TYPES = {"rsa": "ssh-rsa", "ecdsa": "ecdsa-sha2-nistp256", "ed25519": "ssh-ed25519"}
PASSPHRASE = "key-pass-phrase-91"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_keys(folder: Path) -> dict[str, Path]:
    """A passphrase-protected client key of every kind, in OpenSSH format."""
    keys = {}
    for kind, alg in KEY_TYPES.items():
        key = asyncssh.generate_private_key(alg)
        path = folder / f"id_{kind}"
        key.write_private_key(str(path), passphrase=PASSPHRASE)
        key.write_public_key(str(path) + ".pub")
        path.chmod(0o600)
        keys[kind] = path
    return keys


@dataclass
class Drop:
    """A running SFTP server and how to reach its drop folder."""

    kind: str  # openssh | embedded
    port: int
    fingerprint: str
    known_hosts: Path
    data: Path  # local folder the server serves as `remote_root`
    remote_root: str
    keys: dict[str, Path]
    password: str | None = None
    username: str = "hub"
    extra: dict[str, Any] = field(default_factory=dict)

    def remote(self, rel: str) -> str:
        return f"{self.remote_root.rstrip('/')}/{rel.lstrip('/')}"

    def local(self, rel: str) -> Path:
        path = self.data / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def system(self, **overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {"host": "127.0.0.1", "port": self.port, "username": self.username,
                               "known_hosts": str(self.known_hosts), "retries": {"max": 2, "backoff": 0.05}}
        if self.password:
            cfg["password"] = self.password
        else:
            cfg.update(private_key=str(self.keys["ed25519"]), passphrase=PASSPHRASE)
        cfg.update(overrides)
        return cfg


def start_openssh(folder: Path) -> tuple[Drop, subprocess.Popen[bytes]] | str:
    """sshd with generated keys, or why it cannot run here."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists():
        return "OpenSSH sshd is not installed (.ci/run installs openssh-server)"
    if os.geteuid() != 0:
        return "sshd needs root here (it logs the test in as the current user through root's privilege separation)"
    keys = make_keys(folder)
    host = asyncssh.generate_private_key("ssh-ed25519")
    host.write_private_key(str(folder / "host_ed25519"))
    (folder / "host_ed25519").chmod(0o600)
    (folder / "authorized_keys").write_text("".join(Path(str(k) + ".pub").read_text() for k in keys.values()))
    port = free_port()
    data = folder / "data"
    data.mkdir()
    user = os.environ.get("USER") or "root"
    (folder / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_ed25519'}
PidFile {folder / 'sshd.pid'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log = (folder / "sshd.log").open("wb")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(folder / "sshd_config")], stdout=log, stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                return f"sshd exited: {(folder / 'sshd.log').read_text()[-500:]}"
            time.sleep(0.1)
    else:
        proc.terminate()
        return "sshd did not start listening within 15 s"
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host.export_public_key('openssh').decode().strip()}\n")
    drop = Drop("openssh", port, str(host.get_fingerprint("sha256")), known, data, str(data), keys,
                username="root" if user == "root" else user)
    return drop, proc


def start_embedded(folder: Path) -> tuple[Drop, EmbeddedSftpServer]:
    keys = make_keys(folder)
    server = EmbeddedSftpServer(folder / "root", password="embedded-pw-77",
                                authorized_keys=[Path(str(k) + ".pub").read_text() for k in keys.values()]).start()
    known = folder / "known_hosts"
    known.write_text(server.known_hosts_line())
    drop = Drop("embedded", server.port, server.fingerprint, known, folder / "root", "/", keys,
                password="embedded-pw-77", extra={"server": server})
    return drop, server
