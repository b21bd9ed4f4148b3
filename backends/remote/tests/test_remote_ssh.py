"""The asyncssh client against a sandbox: exec, SFTP, host keys pinned on first use, keys kept private."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path

import pytest
from ftkit_remote import ssh
from ftkit_remote.emulators.common import free_port
from ftkit_remote.emulators.sandbox import SshSandbox
from ftkit_remote.providers import SshEndpoint


def _sandbox(tmp_path: Path, **kw: object) -> tuple[SshSandbox, SshEndpoint]:
    key = ssh.load_or_create_key()
    port = free_port()
    sb = SshSandbox("test-" + tmp_path.name, tmp_path / "machine", "127.0.0.1", port, ssh.public_key_line(key),
                    **kw)  # type: ignore[arg-type]  # fmt: skip
    return sb, SshEndpoint("127.0.0.1", port, "root")


def test_key_is_private_and_reused(ftkit_home: Path) -> None:
    mask = os.umask(0)  # even a umask that would leave everything world-writable keeps the key private
    try:
        k1 = ssh.load_or_create_key()
    finally:
        os.umask(mask)
    path = ftkit_home / "remote" / "id_ed25519"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_suffix(".pub").stat().st_mode) == 0o666  # the public half follows the umask
    assert ssh.public_key_line(ssh.load_or_create_key()) == ssh.public_key_line(k1)


def test_exec_sftp_and_offsets(tmp_path: Path) -> None:
    async def main() -> None:
        sb, ep = _sandbox(tmp_path, gpu_name="NVIDIA H100 80GB HBM3", num_gpus=2)
        await sb.start()
        try:
            async with ssh.connect(ep, ssh.load_or_create_key()) as s:
                r = await s.run("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; echo $HOME")
                lines = r.stdout.splitlines()
                assert lines[:2] == ["NVIDIA H100 80GB HBM3, 81920 MiB, 0 MiB"] * 2
                assert lines[2] == str(sb.root)
                assert (await s.run("exit 7")).exit_status == 7
                src = tmp_path / "up"
                (src / "sub").mkdir(parents=True)
                (src / "sub" / "f.txt").write_text("0123456789")
                await s.put(src, "jobs/one")
                assert await s.read_from("jobs/one/sub/f.txt", 4) == b"456789"
                assert await s.read_from("jobs/one/missing", 0) == b""
                await s.get("jobs/one", tmp_path / "down")
                assert (tmp_path / "down" / "sub" / "f.txt").read_text() == "0123456789"
        finally:
            await sb.stop()

    asyncio.run(main())


def test_host_key_pinned_on_first_use_then_enforced(tmp_path: Path, ftkit_home: Path) -> None:
    async def main() -> None:
        sb, ep = _sandbox(tmp_path)
        await sb.start()
        key = ssh.load_or_create_key()
        try:
            async with ssh.connect(ep, key) as s:
                await s.run("true")
            known = (ftkit_home / "remote" / "known_hosts").read_text()
            assert f"[127.0.0.1]:{ep.port} ssh-ed25519 " in known
            async with ssh.connect(ep, key) as s:  # same key: fine
                await s.run("true")
            await sb.rotate_host_key()
            with pytest.raises(ssh.HostKeyChanged, match="changed"):
                async with ssh.connect(ep, key):
                    pass
            ssh.forget_host(ep)  # the machine was destroyed and its address reused
            async with ssh.connect(ep, key) as s:
                await s.run("true")
        finally:
            await sb.stop()

    asyncio.run(main())


def test_refused_until_sshd_listens(tmp_path: Path) -> None:
    async def main() -> None:
        sb, ep = _sandbox(tmp_path)
        with pytest.raises(ssh.SshError, match=r"ssh root@127\.0\.0\.1"):
            async with ssh.connect(ep, ssh.load_or_create_key(), timeout=5):
                pass
        await sb.start()
        async with ssh.connect(ep, ssh.load_or_create_key()) as s:
            assert (await s.run("echo up")).stdout == "up\n"
        await sb.stop()

    asyncio.run(main())


def test_wrong_key_is_refused(tmp_path: Path) -> None:
    import asyncssh

    async def main() -> None:
        sb, ep = _sandbox(tmp_path)
        await sb.start()
        try:
            with pytest.raises(ssh.SshError):
                async with ssh.connect(ep, asyncssh.generate_private_key("ssh-ed25519")):
                    pass
        finally:
            await sb.stop()

    asyncio.run(main())


def test_private_key_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        sb, ep = _sandbox(tmp_path)
        await sb.start()
        async with ssh.connect(ep, ssh.load_or_create_key()) as s:
            await s.run("true")
        await sb.stop()

    asyncio.run(main())
    secret = ssh.load_or_create_key().export_private_key().decode()
    body = "".join(line for line in secret.splitlines() if "PRIVATE KEY" not in line)
    assert body[:40] not in caplog.text


def test_destroy_kills_detached_processes(tmp_path: Path) -> None:
    async def main() -> None:
        sb, ep = _sandbox(tmp_path)
        await sb.start()
        async with ssh.connect(ep, ssh.load_or_create_key()) as s:
            await s.run("setsid nohup sleep 300 > sleep.log 2>&1 < /dev/null & echo $! > sleep.pid")
        pid = int((sb.root / "sleep.pid").read_text())
        import psutil

        assert psutil.pid_exists(pid)
        await sb.stop()

        def gone() -> bool:
            return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

        # The kill signal is delivered asynchronously: give a loaded machine a few seconds, not 0.2 s.
        for _ in range(50):
            if gone():
                break
            await asyncio.sleep(0.1)
        assert gone()

    asyncio.run(main())
