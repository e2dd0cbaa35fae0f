"""A throwaway PostgreSQL server for the tests and the benchmark: Debian's `postgresql` binaries,
`initdb` into a temporary folder, `postgres` on a Unix socket in that folder (and on 127.0.0.1,
for the tests that need a password over TCP), stopped and removed at the end.

initdb refuses to run as root, so as root the server runs as `nobody` (through `runuser`); the
folder is created for that user. Anything that goes wrong is a `PgServerError`: a test session
that needs the server fails, it does not skip.

    with PgServer() as server:
        url = server.address.create_database("t1")   # postgresql://scraper:...@/t1?host=/tmp/...

`PgAddress` is all a client needs (where the server listens, the password): under pytest-xdist the
controller starts the one server and hands its address to the workers (conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

USER = "scraper"  # the server's superuser (the tests connect as it)
RUN_AS = "nobody"  # who runs the server when we are root


class PgServerError(RuntimeError):
    pass


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise PgServerError(
        "PostgreSQL is not installed (no initdb): apt-get install postgresql (make test does)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class PgAddress:
    """A running server: its port on 127.0.0.1, the folder of its Unix socket, the password of
    its superuser."""

    port: int
    socket_dir: str
    password: str

    def url(self, dbname: str = "postgres", *, password: bool = True) -> str:
        """Over the Unix socket (with the password in the URL unless told not to)."""
        auth = f"{USER}:{self.password}" if password else USER
        return f"postgresql://{auth}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{USER}:{secret}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PgServer:
    """`with PgServer() as server:` a running server until the end of the block.

    `durable=False` (the tests) turns fsync off: databases are created and dropped by the hundred
    and nothing must survive a power cut. The benchmark keeps PostgreSQL's defaults.
    """

    def __init__(self, *, durable: bool = False, max_connections: int = 200) -> None:
        self._bin = bin_dir()
        self._durable = durable
        self._max_connections = max_connections
        self._root = Path(tempfile.mkdtemp(prefix="scraper-pg-"))
        self.address = PgAddress(_free_port(), str(self._root), secrets.token_urlsafe(12))
        self._data = self._root / "data"
        self.log_path = self._root / "server.log"
        self._as_other = os.geteuid() == 0
        self._started = False

    # Life --------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        pwfile = self._root / "pwfile"
        pwfile.write_text(self.address.password + "\n")
        if self._as_other:
            shutil.chown(self._root, RUN_AS)
            shutil.chown(pwfile, RUN_AS)
        self._root.chmod(0o700)
        pwfile.chmod(0o600)
        self._run(
            "initdb",
            "-D",
            str(self._data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.address.port),
            "unix_socket_directories": self.address.socket_dir,
            "max_connections": str(self._max_connections),
            "log_line_prefix": "%m [%p] ",
        }
        if not self._durable:
            options |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        with (self._data / "postgresql.conf").open("a") as conf:  # appended: its owner stays
            conf.write("".join(f"{k} = '{v}'\n" for k, v in options.items()))
        self._run(
            "pg_ctl", "-D", str(self._data), "-l", str(self.log_path), "-w", "-t", "60", "start"
        )
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._started = False
            with contextlib.suppress(PgServerError):
                self._run("pg_ctl", "-D", str(self._data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._root, ignore_errors=True)

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far: the postmaster, its live backends, and the
        ones it has reaped (psutil; for the benchmark)."""
        import psutil

        try:
            pid = int((self._data / "postmaster.pid").read_text().split()[0])
            main = psutil.Process(pid)
            times = main.cpu_times()
            total = times.user + times.system + times.children_user + times.children_system
            for child in main.children():
                with contextlib.suppress(psutil.Error):
                    own = child.cpu_times()
                    total += own.user + own.system
        except (OSError, ValueError, psutil.Error):
            return 0.0
        return float(total)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, program: str, *args: str) -> None:
        command = [str(self._bin / program), *args]
        if self._as_other:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=self._root, timeout=120, check=False
        )
        if done.returncode != 0:
            raise PgServerError(
                f"{program} failed ({done.returncode}): {done.stderr.strip() or done.stdout}\n"
                f"{self.log()}"
            )


def main() -> None:
    """`make postgres`: a throw-away server for trying `scraper crawl --workers`, until Ctrl-C
    (or SIGTERM). Its data lives in a temporary folder and goes with it."""
    import signal

    ends = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, ends)  # waited for below, not raised mid-start
    with PgServer(durable=True) as server:
        server.address.create_database("crawls")
        url = server.address.tcp_url("crawls")
        print(
            "A throw-away PostgreSQL server is up (Ctrl-C stops it and deletes its data):\n"
            f"\n  {url}\n\nTry: .venv/bin/scraper crawl URL1 URL2 --workers 2 --db '{url}'",
            flush=True,
        )
        signal.sigwait(ends)


if __name__ == "__main__":
    main()
