"""A real forward proxy on 127.0.0.1 for the tests: Debian's tinyproxy (`make test` installs
it), run in the foreground with a configuration of its own, wanting credentials or not. Every
request it forwards carries `X-Proxied: <name>`, so the site can tell it came through it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
PROXY_USER, PROXY_PASSWORD = "pr0xy-user", "pr0xy-" + "pa55"


@dataclass(frozen=True)
class ForwardProxy:
    port: int
    user: str | None
    password: str | None
    log: Path

    @property
    def url(self) -> str:
        login = f"{self.user}:{self.password}@" if self.user else ""
        return f"http://{login}127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dead_proxy_url() -> str:
    """A proxy URL nobody listens on (a port just freed): connections are refused."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def tinyproxy(
    folder: Path, name: str, user: str | None = None, password: str | None = None
) -> Iterator[ForwardProxy]:
    """tinyproxy on a free port of 127.0.0.1, until the block ends. Blocking: call it from a
    synchronous fixture."""
    if not Path(TINYPROXY).exists():
        pytest.skip("tinyproxy is not installed (`make test` installs it)")
    port = free_port()
    log = folder / f"{name}.log"
    conf = folder / f"{name}.conf"
    lines = [
        f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 30", "MaxClients 64",
        "DisableViaHeader Yes", f'AddHeader "X-Proxied" "{name}"', "LogLevel Info",
    ]  # fmt: skip
    if user:
        lines.append(f"BasicAuth {user} {password}")
    # As root, tinyproxy drops to an unprivileged user (its log is our file, opened here).
    lines += ["User nobody", "Group nogroup"]
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o644)
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [TINYPROXY, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log_file
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"tinyproxy did not start: {log.read_text()}") from None
                time.sleep(0.05)
        yield ForwardProxy(port, user, password, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
