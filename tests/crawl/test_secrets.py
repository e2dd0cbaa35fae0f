"""No secret leaks: a crawl with an API key, a login, a seed's user:pass@, a proxy's credentials
and a session cookie, through every command a user runs (crawl at DEBUG, stats, query, export,
report); none of the secrets appears in any output: the database's files byte for byte, the log
file, what each command printed, the exports and the report."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

from proxyserver import PROXY_PASSWORD, PROXY_USER
from sessions_site import API_KEY, PASSWORD, USER, Visits, second_host, session_site

from helpers import base_url, scraper_cli

SEED_PASSWORD = "s33d-" + "url-password"


def secrets() -> dict[str, str]:
    proxy_authorization = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    authorization = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    seed_authorization = base64.b64encode(f"bob:{SEED_PASSWORD}".encode()).decode()
    return {
        "api key": API_KEY,
        "password": PASSWORD,
        "Authorization value": authorization,
        "seed password": SEED_PASSWORD,
        "seed's Authorization value": seed_authorization,
        "proxy password": PROXY_PASSWORD,
        "proxy's Proxy-Authorization value": proxy_authorization,
    }


def leaks(outputs: dict[str, bytes]) -> list[tuple[str, str]]:
    return [
        (where, what)
        for where, data in outputs.items()
        for what, secret in secrets().items()
        if secret.encode() in data
    ]


def read_outputs(folder: Path) -> dict[str, bytes]:
    """The log file, the report, and the database with its WAL and shared memory."""
    outputs = {"log file": (folder / "crawl.log").read_bytes()}
    outputs["report"] = (folder / "report.html").read_bytes()
    for path in folder.glob("crawl.db*"):
        outputs[path.name] = path.read_bytes()
    return outputs


async def test_no_secret_reaches_any_output(aiohttp_server, tmp_path: Path, good_proxy) -> None:
    first, second = Visits(), Visits()
    other = await aiohttp_server(second_host(second), host="127.0.0.2")
    site = await aiohttp_server(session_site(first, base_url(other).rstrip("/")))
    seed, host = base_url(site), f"127.0.0.1:{site.port}"
    config = f"""
[crawl]
allowed_domains = ["127.0.0.1", "127.0.0.2"]
[fetch]
block_private = false
proxies = ["{good_proxy.url}"]
rules = [{{ url = "{seed}api/*", headers = {{ X-Api-Key = {{ env = "SITE_KEY" }} }} }}]
[log]
interval = 0.1
[[auth]]
host = "{host}"
user = "{USER}"
password_env = "SITE_PASSWORD"
"""
    await asyncio.to_thread((tmp_path / "config.toml").write_text, config)
    env = {**os.environ, "SITE_KEY": API_KEY, "SITE_PASSWORD": PASSWORD}
    db, log = tmp_path / "crawl.db", tmp_path / "crawl.log"
    seed_with_login = base_url(other).replace("//", f"//bob:{SEED_PASSWORD}@") + "from-seed"
    outputs: dict[str, bytes] = {}
    commands = {
        "crawl": ["crawl", seed, seed_with_login, "--db", str(db), "--log-level", "DEBUG",
                  "--log-file", str(log)],
        "crawl --log-format json": ["crawl", seed, seed_with_login, "--db", str(db),
                                    "--log-level", "DEBUG", "--log-format", "json"],
        "stats": ["stats", "--db", str(db)],
        "query": ["query", "--db", str(db), "SELECT * FROM crawls"],
        "query pages": ["query", "--db", str(db), "SELECT * FROM pages"],
        "export jsonl": ["export", "--db", str(db), "--format", "jsonl"],
        "export csv": ["export", "--db", str(db), "--format", "csv"],
        "report": ["report", "--db", str(db), "--out", str(tmp_path / "report.html")],
    }  # fmt: skip
    for name, args in commands.items():
        code, out, err = await scraper_cli(*args, cwd=tmp_path, env=env)
        assert code == 0, (name, err)
        outputs[f"{name}: stdout"], outputs[f"{name}: stderr"] = out.encode(), err.encode()
    outputs.update(await asyncio.to_thread(read_outputs, tmp_path))
    # The crawl did use them: the pages behind them were fetched.
    assert first.headers_of("/api/data")[0]["X-Api-Key"] == API_KEY
    assert first.headers_of("/")[0]["X-Proxied"] == "good"  # through the proxy
    assert second.headers_of("/from-seed")[0]["Authorization"].startswith("Basic ")
    assert b"DEBUG" in outputs["log file"] and b"/private/" in outputs["log file"]
    assert leaks(outputs) == []
