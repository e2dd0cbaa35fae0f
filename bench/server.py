"""Serve a benchmark site on 127.0.0.1: Debian's nginx, or an aiohttp fallback.

nginx runs from a config file in a private temp folder (`-p`, `-c`, `-e`): nothing under /etc is
read or changed, and it stops with the benchmark. It cannot add latency by itself, so the latency
case uses the Lua module (`libnginx-mod-http-lua`) to `ngx.sleep` before each response: the sleep
is a timer on nginx's event loop, so 64 requests waiting cost it nothing. When nginx (or, for
latency, its Lua module) is missing, `python -m bench.server` serves the same files with
aiohttp, `asyncio.sleep` standing in for the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .site import file_for

LUA_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")  # the Lua module needs NDK first
MODULE_DIRS = (Path("/usr/share/nginx/modules"), Path("/usr/lib/nginx/modules"))
START_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Server:
    kind: str  # "nginx" or "aiohttp"
    url: str  # the site's home page, e.g. http://127.0.0.1:41234/
    pid: int


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


def lua_modules() -> list[Path] | None:
    """Paths of the NDK and Lua modules, or None when they are not installed."""
    for folder in MODULE_DIRS:
        paths = [folder / name for name in LUA_MODULES]
        if all(p.is_file() for p in paths):
            return paths
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_config(root: Path, port: int, prefix: Path, latency: float, modules: list[Path]) -> str:
    loads = "".join(f"load_module {m};\n" for m in modules)
    temp = " ".join(f"{kind}_temp_path {prefix}/tmp;" for kind in _TEMP_PATHS)
    # Runs before the content phase, once per request (`is_internal`: not again after `index`).
    delay = (
        f"access_by_lua_block {{ if not ngx.req.is_internal() then ngx.sleep({latency}) end }}"
        if latency
        else ""
    )
    # As root the workers would drop to `nobody`, who cannot read a private temp folder.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    return f"""{loads}{user}
daemon off;
worker_processes 1;  # the crawlers are measured; the server should take one core at most
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temp}
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types {{ }}
    default_type text/html;
    charset utf-8;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        {delay}
        location = / {{ try_files /index.html =404; }}
        location = /list {{ try_files /list/$arg_page.html =404; }}
        location /page/ {{ try_files $uri =404; }}
        location / {{ return 404; }}
    }}
}}
"""


_TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


@contextlib.contextmanager
def serve(root: Path, latency: float = 0.0, prefer: str = "nginx") -> Iterator[Server]:
    """Serve the site at `root` until the block ends; nginx when it can add the latency asked."""
    nginx = nginx_binary() if prefer == "nginx" else None
    modules = lua_modules() if latency else []
    if nginx is not None and modules is not None:
        with _nginx(nginx, root, latency, modules) as server:
            yield server
    else:
        with _aiohttp(root, latency) as server:
            yield server


@contextlib.contextmanager
def _nginx(binary: str, root: Path, latency: float, modules: list[Path]) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="scraper-bench-nginx-") as tmp:
        prefix = Path(tmp)
        (prefix / "tmp").mkdir()
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(root.resolve(), port, prefix, latency, modules))
        command = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        with _running(command, port, prefix / "error.log") as process:
            yield Server("nginx", f"http://127.0.0.1:{port}/", process.pid)


@contextlib.contextmanager
def _aiohttp(root: Path, latency: float) -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "bench.server", str(root), "--port", str(port)]
    command += ["--latency", str(latency)]
    with (
        tempfile.TemporaryDirectory(prefix="scraper-bench-aiohttp-") as tmp,
        _running(command, port, Path(tmp) / "server.log") as process,
    ):
        yield Server("aiohttp", f"http://127.0.0.1:{port}/", process.pid)


@contextlib.contextmanager
def _running(command: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    try:
        _wait_until_listening(process, port, log)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)  # nginx: fast shutdown; aiohttp: clean exit
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{_program(process)} exited at start: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{_program(process)} did not listen on port {port} in {START_TIMEOUT} s")


def _program(process: subprocess.Popen[bytes]) -> str:
    args = process.args
    return str(args[0]) if isinstance(args, list | tuple) else str(args)


# The aiohttp fallback, run as its own process so its CPU is never counted as a crawler's.


def make_static_app(root: Path, latency: float = 0.0) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if latency:
            await asyncio.sleep(latency)
        name = file_for(request.path, request.query_string)
        if name is None:
            raise web.HTTPNotFound()
        # FileResponse answers 404 itself when the file is missing, and uses sendfile.
        return web.FileResponse(root / name, headers={"Content-Type": "text/html; charset=utf-8"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a benchmark site with aiohttp.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            make_static_app(args.root, args.latency),
            host="127.0.0.1",
            port=args.port,
            access_log=None,
            print=None,
        )


if __name__ == "__main__":
    main()
