"""The "rented machine" behind every emulated instance: a real SSH server on loopback.

Each sandbox is an asyncssh server (key auth, exec and SFTP) on a loopback address, rooted in its
own folder: ``exec`` runs ``bash -c COMMAND`` with that folder as working directory and ``$HOME``,
SFTP is chrooted to it. It is a *test double for a machine*, not a security boundary: commands run
as the user who runs the tests.

The machine's Python is the test interpreter's *base* Python with the test virtualenv's
site-packages on ``PYTHONPATH`` (torch, transformers, peft...: the "image"). ftkit, ftkit-hf and
ftkit-remote are installed editable in that virtualenv, through ``.pth`` files that Python does not
process for ``PYTHONPATH`` entries, so they are *not* importable on the machine: a run works there
only because the client shipped its wheels and the run script installed them (as on a real machine).

The GPU is fake, and says so: a ``nvidia-smi`` shim on the sandbox's ``PATH`` prints a realistic
``--query-gpu`` CSV line per GPU (name, memory) so readiness checks have something to parse.
Training itself runs on the CPU. Faults a test can set: no GPU (no shim), a full disk (a ``df`` shim
reporting almost no free space), dropped connections, a changed host key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import site
import sys
from pathlib import Path
from typing import Any

import asyncssh
import psutil

_MARKER = "FTKIT_SANDBOX_ID"


class SshSandbox:
    """One emulated machine: a folder, an SSH server on ``host:port``, and the processes it started.

    Args:
        sandbox_id: unique name; every process started through it carries ``FTKIT_SANDBOX_ID`` so
            destroying the instance can kill them (detached ones included).
        root: the machine's home folder.
        host, port: where sshd listens (a loopback address).
        authorized_key: the one OpenSSH public key line allowed to log in.
        env: environment of every command (the provider's injected variables).
        gpu_name, num_gpus: what the ``nvidia-smi`` shim reports; ``num_gpus=0`` removes the shim.
        free_disk_gb: when set, a ``df`` shim reports this much free space (the disk-full fault).
    """

    def __init__(
        self,
        sandbox_id: str,
        root: Path,
        host: str,
        port: int,
        authorized_key: str,
        env: dict[str, str] | None = None,
        gpu_name: str = "NVIDIA A100-SXM4-80GB",
        gpu_ram_mib: int = 81920,
        num_gpus: int = 1,
        free_disk_gb: float | None = None,
    ) -> None:
        self.sandbox_id = sandbox_id
        self.root = root
        self.host = host
        self.port = port
        self.authorized_key = authorized_key
        self.env = dict(env or {})
        self.gpu_name, self.gpu_ram_mib, self.num_gpus = gpu_name, gpu_ram_mib, num_gpus
        self.free_disk_gb = free_disk_gb
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._server: asyncssh.SSHAcceptor | None = None
        self._conns: set[asyncssh.SSHServerConnection] = set()
        self.commands: list[str] = []  # every command run, for tests to inspect

    @property
    def running(self) -> bool:
        """True while sshd accepts connections."""
        return self._server is not None

    async def start(self) -> None:
        """Write the shims and start sshd."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_shims()
        sandbox = self

        class _Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self._conn = conn
                sandbox._conns.add(conn)

            def connection_lost(self, exc: Exception | None) -> None:
                sandbox._conns.discard(self._conn)

        self._server = await asyncssh.create_server(
            _Server,
            self.host,
            self.port,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(self.authorized_key + "\n"),
            process_factory=self._run,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(self.root).encode()),
            encoding=None,
            allow_scp=True,
        )

    async def stop(self, kill: bool = True) -> None:
        """Stop sshd, drop connections and (by default) kill every process the sandbox started."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_connections()
        if kill:
            kill_sandbox_processes(self.sandbox_id)

    async def rotate_host_key(self) -> None:
        """Restart sshd with a new host key (the "host key changed" fault); processes live on."""
        await self.stop(kill=False)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        await self.start()

    def drop_connections(self) -> None:
        """Cut every open SSH connection (the "disconnect mid-run" fault)."""
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()

    def _environment(self) -> dict[str, str]:
        shims = self.root / ".sandbox" / "bin"
        # Not the virtualenv's bin/: its python and scripts would process the editable installs' .pth files.
        path = os.pathsep.join([str(shims), "/usr/local/bin", "/usr/bin", "/bin"])
        env = {
            "PATH": path,
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            _MARKER: self.sandbox_id,
            "PYTHONPATH": os.pathsep.join(image_site_packages()),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        return env | self.env

    async def _run(self, process: asyncssh.SSHServerProcess[Any]) -> None:
        command = process.command
        if not command:
            process.stderr.write(b"this emulated machine runs commands only, no interactive shell\n")
            process.exit(1)
            return
        self.commands.append(command)
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command, cwd=self.root, env=self._environment(),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

        async def pump(src: asyncio.StreamReader, dst: Any) -> None:
            while chunk := await src.read(65536):
                dst.write(chunk)

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(Exception):
                while data := await process.stdin.read(65536):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            with contextlib.suppress(Exception):
                proc.stdin.close()

        feeder = asyncio.ensure_future(feed())
        try:
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
            code = await proc.wait()
        except (asyncssh.Error, ConnectionError, OSError):
            return  # the client went away; a detached child keeps running, a foreground one gets SIGHUP-free death
        finally:
            feeder.cancel()
        with contextlib.suppress(Exception):
            process.exit(code)

    def _write_shims(self) -> None:
        shims = self.root / ".sandbox" / "bin"
        shims.mkdir(parents=True, exist_ok=True)
        # The machine's Python: the base interpreter (see the module docstring), and its usual launchers.
        base = shlex.quote(getattr(sys, "_base_executable", None) or sys.executable)
        launchers = {"python": "", "python3": "", "pip": "-m pip ", "torchrun": "-m torch.distributed.run ",
                     "accelerate": "-m accelerate.commands.accelerate_cli "}  # fmt: skip
        for name, args in launchers.items():
            (shims / name).write_text(f'#!/bin/sh\n# ftkit emulator shim: the machine Python\nexec {base} {args}"$@"\n')
            (shims / name).chmod(0o755)
        smi, df = shims / "nvidia-smi", shims / "df"
        if self.num_gpus > 0:
            line = f"{self.gpu_name}, {self.gpu_ram_mib} MiB, 0 MiB"
            smi.write_text(
                "#!/bin/sh\n# ftkit emulator shim: a FAKE GPU for tests (training runs on the CPU).\n"
                'case "$*" in *--query-gpu*) ;; *) echo "NVIDIA-SMI 550.54.15  Driver Version: 550.54.15'
                '  CUDA Version: 12.4 (ftkit emulator shim)";; esac\n'
                f"for i in $(seq 1 {self.num_gpus}); do echo {shlex.quote(line)}; done\n"
            )
            smi.chmod(0o755)
        else:
            smi.unlink(missing_ok=True)
        if self.free_disk_gb is not None:
            kb = int(self.free_disk_gb * 1024 * 1024)
            df.write_text(
                "#!/bin/sh\n# ftkit emulator shim: a nearly full disk (fault injection).\n"
                "echo 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n"
                f"echo 'overlay 104857600 {104857600 - kb} {kb} 99% /'\n"
            )
            df.chmod(0o755)
        else:
            df.unlink(missing_ok=True)


def image_site_packages() -> list[str]:
    """The test environment's site-packages folders: what the emulated machine's image has installed."""
    return [p for p in site.getsitepackages() if Path(p).is_dir()]


def kill_sandbox_processes(sandbox_id: str) -> int:
    """Kill every process whose environment carries this sandbox's marker; returns how many."""
    killed = 0
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid == os.getpid() or p.environ().get(_MARKER) != sandbox_id:
                continue
            p.send_signal(signal.SIGKILL)
            killed += 1
        except (psutil.Error, OSError):
            continue
    return killed
