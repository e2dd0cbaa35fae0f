"""Memory benchmark: does the crawler's memory grow with the URLs it discovers?

Serves a synthetic site on 127.0.0.1 whose every page links to FANOUT pages never seen before, then
crawls it with the fetch count capped (crawl.max_pages), so the frontier grows to FANOUT times the
pages fetched. Reports the crawler process's peak RSS (from os.wait4) against URLs discovered, at
several sizes: flat means memory does not depend on the frontier's size.

    python -m bench.frontier_memory [--pages 1000 2500 5000] [--fanout 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def serve(port: int, fanout: int) -> None:
    from aiohttp import web

    async def page(request: web.Request) -> web.Response:
        n = int(request.match_info.get("n", "0"))
        links = "".join(f'<a href="/n/{n * fanout + k}">{k}</a>' for k in range(1, fanout + 1))
        return web.Response(text=f"<title>{n}</title>{links}", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/n/{n}", page)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("the benchmark site did not start")


def crawl(port: int, pages: int, workdir: Path) -> tuple[int, float, float]:
    """Crawl with `pages` fetches; (URLs discovered, peak RSS in MB, seconds)."""
    db = workdir / f"memory-{pages}.db"
    command = [
        sys.executable, "-m", "scraper", "crawl", f"http://127.0.0.1:{port}/", "--db", str(db),
        "--max-pages", str(pages), "--concurrency", "32",
        "--set", "fetch.per_host_concurrency=32", "--set", "crawl.obey_robots=false",
    ]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"crawl failed: {command}")
    with sqlite3.connect(db) as conn:
        (discovered,) = conn.execute("SELECT count(*) FROM frontier").fetchone()
    return discovered, usage.ru_maxrss / 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[1000, 2500, 5000])
    parser.add_argument("--fanout", type=int, default=200)
    args = parser.parse_args()
    port = free_port()
    module = "bench.frontier_memory"
    site = subprocess.Popen([sys.executable, "-m", module, "--serve", str(port), str(args.fanout)])
    try:
        wait_for(port)
        with tempfile.TemporaryDirectory() as tmp:
            header = ("pages fetched", "URLs discovered", "peak RSS (MB)", "s")
            print("{:>13}  {:>15}  {:>13}  {:>6}".format(*header))
            for pages in args.pages:
                discovered, rss, seconds = crawl(port, pages, Path(tmp))
                print(f"{pages:>13}  {discovered:>15,}  {rss:>13.1f}  {seconds:>6.1f}", flush=True)
    finally:
        site.terminate()
        site.wait()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
