"""SSH to the rented machine with asyncssh: exec, SFTP, and host keys pinned on first use.

- ftkit's own key pair lives in ``$FTKIT_HOME/remote/id_ed25519`` (made on first use, mode 0600);
  only its public half is ever sent anywhere, and neither half is logged.
- Host keys: the first connection to ``host:port`` records the server's key in
  ``$FTKIT_HOME/remote/known_hosts``; a later connection with another key is refused
  (:class:`HostKeyChanged`). A destroyed instance's pin is dropped (:func:`forget_host`), because
  providers reuse addresses and ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
from filelock import FileLock

from ftkit.atomic import atomic_write_bytes, atomic_write_text
from ftkit.errors import BackendError
from ftkit.paths import ftkit_home
from ftkit_remote.providers.base import SshEndpoint


class SshError(BackendError):
    """SSH to the machine failed (refused, timed out, authentication, dropped)."""


class HostKeyChanged(SshError):
    """The machine's host key differs from the one pinned on first use."""


def remote_home() -> Path:
    """``$FTKIT_HOME/remote``: ftkit-remote's key, known hosts and lease ledger."""
    d = ftkit_home() / "remote"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_or_create_key(path: Path | None = None) -> asyncssh.SSHKey:
    """ftkit's SSH key, created (ed25519, mode 0600) the first time."""
    path = path or remote_home() / "id_ed25519"
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="ftkit")
        atomic_write_bytes(path, key.export_private_key(), private=True)  # a secret: 0600 whatever the umask
        atomic_write_text(path.with_suffix(".pub"), key.export_public_key().decode())
    return asyncssh.read_private_key(str(path))


def public_key_line(key: asyncssh.SSHKey) -> str:
    """The OpenSSH public key line of ``key`` (what providers and authorized_keys take)."""
    return key.export_public_key().decode().strip()


class _KnownHosts:
    """A ``host:port key`` file with pin-on-first-use, safe across processes (a file lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        out = {}
        for line in self.path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, key = line.split(" ", 1)
                out[name] = key.strip()
        return out

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.path.with_suffix(".lock")):  # across processes, on every OS
            yield

    def check_or_pin(self, name: str, key: str) -> None:
        with self._locked():
            known = self._read()
            if name in known and known[name] != key:
                raise HostKeyChanged(
                    f"host key of {name} changed since it was first seen; refusing to connect "
                    f"(if the machine was really replaced, remove its line from {self.path})"
                )
            if name not in known:
                known[name] = key
                atomic_write_text(self.path, "".join(f"{k} {v}\n" for k, v in sorted(known.items())))

    def forget(self, name: str) -> None:
        with self._locked():
            known = self._read()
            if known.pop(name, None) is not None:
                atomic_write_text(self.path, "".join(f"{k} {v}\n" for k, v in sorted(known.items())))


def _known_hosts() -> _KnownHosts:
    return _KnownHosts(remote_home() / "known_hosts")


def forget_host(endpoint: SshEndpoint) -> None:
    """Drop the pinned key of a machine that was destroyed (its address may be reused)."""
    _known_hosts().forget(f"[{endpoint.host}]:{endpoint.port}")


@dataclass
class CommandResult:
    """What a remote command returned."""

    exit_status: int
    stdout: str
    stderr: str


class SshSession:
    """An open SSH connection to one machine. Use :func:`connect`."""

    def __init__(self, conn: asyncssh.SSHClientConnection, endpoint: SshEndpoint) -> None:
        self._conn = conn
        self.endpoint = endpoint

    async def run(self, command: str, timeout: float = 120.0, check: bool = False) -> CommandResult:
        """Run ``command`` (a shell line) and collect its output."""
        try:
            r = await asyncio.wait_for(self._conn.run(command, check=False), timeout)
        except (asyncssh.Error, OSError, TimeoutError) as e:
            raise SshError(f"{self._where}: command failed to run: {type(e).__name__}: {e}") from None
        res = CommandResult(int(r.exit_status or 0), _text(r.stdout), _text(r.stderr))
        if check and res.exit_status != 0:
            raise SshError(f"{self._where}: `{command[:80]}` exited {res.exit_status}: {res.stderr.strip()[-500:]}")
        return res

    async def put(self, local: Path, remote: str) -> None:
        """Copy a file or folder (recursively) to ``remote`` (relative paths are under the home folder)."""
        try:
            async with self._conn.start_sftp_client() as sftp:
                parent = remote.rsplit("/", 1)[0] if "/" in remote else ""
                if parent:
                    await sftp.makedirs(parent, exist_ok=True)
                await sftp.put(str(local), remote, recurse=True, preserve=False)
        except (asyncssh.Error, OSError) as e:
            raise SshError(f"{self._where}: upload of {local.name} failed: {e}") from None

    async def get(self, remote: str, local: Path) -> None:
        """Copy a remote file or folder (recursively) to ``local``."""
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with self._conn.start_sftp_client() as sftp:
                await sftp.get(remote, str(local), recurse=True, preserve=False)
        except (asyncssh.Error, OSError) as e:
            raise SshError(f"{self._where}: download of {remote} failed: {e}") from None

    async def read_from(self, remote: str, offset: int, limit: int = 4 << 20) -> bytes:
        """Bytes of ``remote`` from ``offset`` on (b"" when the file does not exist yet)."""
        try:
            async with self._conn.start_sftp_client() as sftp:
                try:
                    async with sftp.open(remote, "rb") as f:
                        await f.seek(offset)
                        data = await f.read(limit)
                        return data if isinstance(data, bytes) else data.encode()
                except asyncssh.SFTPNoSuchFile:
                    return b""
        except (asyncssh.Error, OSError) as e:
            raise SshError(f"{self._where}: reading {remote} failed: {e}") from None

    async def close(self) -> None:
        """Close the connection."""
        self._conn.close()
        with contextlib.suppress(Exception):
            await self._conn.wait_closed()

    @property
    def _where(self) -> str:
        return f"ssh {self.endpoint.user}@{self.endpoint.host}:{self.endpoint.port}"


def _text(x: str | bytes | None) -> str:
    if x is None:
        return ""
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else x


@contextlib.asynccontextmanager
async def connect(endpoint: SshEndpoint, key: asyncssh.SSHKey, timeout: float = 20.0) -> AsyncIterator[SshSession]:
    """Open an SSH session, pinning the host key on first use.

    Raises:
        SshError: refused, timed out or authentication failed.
        HostKeyChanged: the host presented another key than the pinned one.
    """
    name = f"[{endpoint.host}]:{endpoint.port}"
    changed: list[HostKeyChanged] = []

    class _Client(asyncssh.SSHClient):
        def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
            try:
                _known_hosts().check_or_pin(name, key.export_public_key().decode().strip())
            except HostKeyChanged as e:
                changed.append(e)
                return False
            return True

    try:
        conn, _ = await asyncio.wait_for(
            asyncssh.create_connection(
                _Client, endpoint.host, endpoint.port, username=endpoint.user, client_keys=[key],
                # An empty trusted list (not None) makes asyncssh ask validate_host_public_key.
                known_hosts=([], [], []), agent_path=None, config=[], preferred_auth="publickey",
            ),
            timeout,
        )  # fmt: skip
    except (asyncssh.Error, OSError, TimeoutError) as e:
        if changed:
            raise changed[0] from None
        raise SshError(f"ssh {endpoint.user}@{endpoint.host}:{endpoint.port}: {type(e).__name__}: {e}") from None
    session = SshSession(conn, endpoint)
    try:
        yield session
    finally:
        await session.close()


def quote(s: str) -> str:
    """Shell-quote ``s`` for a remote command line."""
    return shlex.quote(s)
