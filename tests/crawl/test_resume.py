"""Never lose a crawl: kill -9 and resume, signals and grace, a full disk, re-crawls, migrations.

Crawls run as real subprocesses against a demo site served from the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from pathlib import Path

import aiosqlite
import psutil
import pytest
from aiohttp import web

from helpers import BACKTRACKING, backtracking_site, base_url, crawl, rows
from scraper.demosite import STATE, SiteSpec, make_app
from scraper.parse import procworker
from scraper.store.sqlite.database import crawl_in_progress
from scraper.store.sqlite.schema import APPLICATION_ID, SCHEMA_V1, SCHEMA_VERSION

SCRAPER = [sys.executable, "-m", "scraper"]
SPEC = SiteSpec(
    pages=150, page_bytes=3000, latency=0.01, special_count=1, slow_seconds=0.05,
    huge_bytes=300_000, seed=5,
)  # fmt: skip
OPTIONS = ["--set", "storage.batch_size=7", "--set", "fetch.max_bytes=200000",
           "--set", "fetch.retry_backoff=0.01", "--concurrency", "8"]  # fmt: skip


async def serve(aiohttp_server, spec: SiteSpec, *hits_wanted: int):
    """The demo site, and for each of `hits_wanted` an event set once it has answered that many
    requests."""
    events = {n: asyncio.Event() for n in hits_wanted}

    @web.middleware
    async def notice(request: web.Request, handler):
        response = await handler(request)
        hits = sum(request.app[STATE].hits.values())
        for wanted, event in events.items():
            if hits >= wanted:
                event.set()
        return response

    app = make_app(spec)
    app.middlewares.append(notice)
    server = await aiohttp_server(app)
    return server, events


async def start(url: str, db: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SCRAPER, "crawl", url, "--db", str(db), *OPTIONS, *extra,
        cwd=db.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def assert_complete(db: Path, root: str, spec: SiteSpec) -> None:
    """What an uninterrupted crawl stores: every reachable URL once, the crawl finished."""
    expected = sorted(root + path.lstrip("/") for path in spec.reachable())
    assert [u for (u,) in await rows(db, "SELECT url FROM pages ORDER BY url")] == expected
    assert await rows(db, "SELECT id, status FROM crawls") == [(1, "finished")]
    assert await rows(db, "SELECT DISTINCT state FROM frontier") == [(2,)]
    untitled = await rows(
        db, "SELECT url FROM pages WHERE status = 200 AND title IS NULL AND url LIKE '%/page/%'"
    )
    assert untitled == []


@pytest.mark.parametrize("after_hits", [2, 25, 80, 140])
async def test_kill_9_at_any_moment_then_resume(aiohttp_server, tmp_path, after_hits):
    server, events = await serve(aiohttp_server, SPEC, after_hits)
    reached = events[after_hits]
    root, db = base_url(server), tmp_path / "crawl.db"
    process = await start(root, db)
    await asyncio.wait_for(reached.wait(), 60)
    process.kill()
    # Its parse workers notice and exit too: until they do they hold its pipes open.
    await asyncio.wait_for(process.communicate(), 10)
    code, _, err = await finish(await start(root, db))
    assert code == 0, err
    assert "resuming crawl 1" in err
    await assert_complete(db, root, SPEC)


async def test_killed_twice_then_resumed(aiohttp_server, tmp_path):
    server, reached = await serve(aiohttp_server, SPEC, 20, 60)
    root, db = base_url(server), tmp_path / "crawl.db"
    for hits in (20, 60):
        process = await start(root, db)
        await asyncio.wait_for(reached[hits].wait(), 60)
        process.kill()
        await asyncio.wait_for(process.communicate(), 10)
    code, _, err = await finish(await start(root, db))
    assert code == 0, err
    await assert_complete(db, root, SPEC)


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
async def test_a_signal_stops_gracefully_and_resume_completes(aiohttp_server, tmp_path, signum):
    import signal

    server, events = await serve(aiohttp_server, SPEC, 40)
    reached = events[40]
    root, db = base_url(server), tmp_path / "crawl.db"
    process = await start(root, db)
    await asyncio.wait_for(reached.wait(), 60)
    process.send_signal(getattr(signal, signum))
    code, _, _ = await finish(process)
    assert code == 130
    assert await rows(db, "SELECT status FROM crawls") == [("interrupted",)]
    code, _, err = await finish(await start(root, db))
    assert code == 0, err
    await assert_complete(db, root, SPEC)


async def slow_page_site(aiohttp_server, seconds: float):
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(seconds)
        return web.Response(text="<title>slow but here</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", slow)
    return await aiohttp_server(app), arrived


async def test_requests_in_flight_get_the_grace_period(aiohttp_server, tmp_path):
    server, arrived = await slow_page_site(aiohttp_server, 1.0)
    db = tmp_path / "crawl.db"
    process = await start(base_url(server), db, "--set", "crawl.shutdown_grace=5")
    await asyncio.wait_for(arrived.wait(), 60)
    process.send_signal(2)
    code, _, _ = await finish(process)
    assert code == 130
    assert await rows(db, "SELECT title FROM pages") == [("slow but here",)]


async def test_past_the_grace_period_requests_are_abandoned(aiohttp_server, tmp_path):
    server, arrived = await slow_page_site(aiohttp_server, 30.0)
    db = tmp_path / "crawl.db"
    process = await start(base_url(server), db, "--set", "crawl.shutdown_grace=0.3")
    await asyncio.wait_for(arrived.wait(), 60)
    process.send_signal(2)
    code, _, _ = await asyncio.wait_for(finish(process), 10)  # not the page's 30 s
    assert code == 130
    assert await rows(db, "SELECT count(*) FROM pages") == [(0,)]
    assert await rows(db, "SELECT status FROM crawls") == [("interrupted",)]


def test_a_reader_probing_the_lock_does_not_refuse_a_starting_crawl(tmp_path):
    """`scraper crawls`, `stats` and `report` probe `<db>.lock` with a shared flock; a crawl
    taking the lock while a probe holds it waits (storage.LOCK_PATIENCE) instead of refusing."""
    import fcntl
    import os
    import threading

    from scraper.store.sqlite.database import _lock_for_writing

    db = tmp_path / "probed.db"
    with (tmp_path / "probed.db.lock").open("a+") as probe:
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        threading.Timer(0.2, probe.close).start()
        lock = _lock_for_writing(db)  # waits for the probe, then takes the lock
    with lock:
        assert (tmp_path / "probed.db.lock").read_text() == str(os.getpid())


async def test_fresh_starts_a_new_crawl(aiohttp_server, tmp_path):
    server, events = await serve(aiohttp_server, SPEC, 30)
    reached = events[30]
    root, db = base_url(server), tmp_path / "crawl.db"
    process = await start(root, db)
    await asyncio.wait_for(reached.wait(), 60)
    assert await asyncio.to_thread(crawl_in_progress, db)  # its process holds the lock
    process.kill()
    await asyncio.wait_for(process.communicate(), 10)
    assert not await asyncio.to_thread(crawl_in_progress, db)
    # Killed, it never got to record its end: the table still says running, but with no
    # process holding the database's lock, `scraper crawls` knows better.
    assert await rows(db, "SELECT status FROM crawls") == [("running",)]
    listing = await asyncio.create_subprocess_exec(
        *SCRAPER, "crawls", "--db", str(db), cwd=db.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    code, out, err = await finish(listing)
    assert code == 0, err
    assert "interrupted" in out and "running" not in out
    summary = await asyncio.create_subprocess_exec(
        *SCRAPER, "stats", "--db", str(db), cwd=db.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    code, out, err = await finish(summary)
    assert code == 0, err
    assert out.startswith("Crawl 1 interrupted:"), out
    await asyncio.sleep(1.1)  # a dead crawl's duration ends with its last page, not now
    again = await asyncio.create_subprocess_exec(
        *SCRAPER, "stats", "--db", str(db), cwd=db.parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert (await finish(again))[1].splitlines()[0] == out.splitlines()[0]
    code, _, err = await finish(await start(root, db, "--fresh", "--max-pages", "5"))
    assert code == 0, err
    assert "resuming" not in err
    assert await rows(db, "SELECT id, status FROM crawls ORDER BY id") == [
        (1, "interrupted"),  # marked so when the next crawl took the database
        (2, "finished"),
    ]


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A real 512 KiB filesystem (tmpfs), to run out of space for real. Needs root."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_fails_clearly_and_keeps_what_was_committed(aiohttp_server, tiny_disk):
    server, _ = await serve(aiohttp_server, SiteSpec(pages=300, page_bytes=8000, extras=False))
    db = tiny_disk / "crawl.db"
    process = await start(base_url(server), db, "--set", "parse.store_text=true")
    code, _, err = await finish(process)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("scraper: error: ")
    assert "full" in err
    assert "Traceback" not in err
    ((stored,),) = await rows(db, "SELECT count(*) FROM pages")
    assert stored > 0
    assert await rows(db, "PRAGMA integrity_check") == [("ok",)]


def conditional_app() -> tuple[web.Application, list[tuple[str, str | None]]]:
    """Three linked pages that honour If-None-Match; records (path, If-None-Match) of each GET."""
    seen: list[tuple[str, str | None]] = []

    async def page(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("If-None-Match")))
        etag = f'"v1-{request.path}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        n = int(request.match_info.get("n", "0"))
        links = f'<a href="/p/{(n + 1) % 3}">next</a>'
        return web.Response(
            text=f"<title>Page {n}</title>{links}", content_type="text/html", headers={"ETag": etag}
        )

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/p/{n}", page)
    return app, seen


async def test_a_recrawl_asks_conditionally_and_keeps_unchanged_pages(aiohttp_server, make_config):
    app, seen = conditional_app()
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], crawl__obey_robots=False)
    first = await crawl(config)
    before = await rows(
        config.storage.db, "SELECT id, url, title, fetched_at FROM pages ORDER BY url"
    )
    seen.clear()
    second = await crawl(config)
    after = await rows(
        config.storage.db,
        "SELECT id, url, title, fetched_at, status, crawl_id FROM pages ORDER BY url",
    )

    assert (first.pages, second.pages) == (4, 4)
    assert (first.by_status, second.by_status) == ({"2xx": 4}, {"not modified": 4})
    assert sorted(seen) == sorted((path, f'"v1-{path}"') for path in ("/", "/p/0", "/p/1", "/p/2"))
    for (id1, url1, title1, at1), (id2, url2, title2, at2, status, crawl_id) in zip(
        before, after, strict=True
    ):
        assert (id1, url1, title1) == (id2, url2, title2)  # not rewritten
        assert at2 > at1  # but checked again
        assert (status, crawl_id) == (200, 2)


async def test_recrawl_after_skips_recent_pages(aiohttp_server, make_config):
    app, seen = conditional_app()
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], crawl__obey_robots=False, crawl__recrawl_after="1h")
    await crawl(config)
    seen.clear()
    summary = await crawl(config)
    assert seen == []  # every page is younger than an hour
    assert summary.pages == 4  # yet the crawl walked them all, through their stored links


async def test_a_version_1_database_is_migrated(aiohttp_server, make_config, tmp_path):
    db = tmp_path / "crawl.db"
    async with aiosqlite.connect(db) as conn:
        await conn.executescript(
            f"BEGIN; {SCHEMA_V1}; PRAGMA application_id = {APPLICATION_ID}; "
            "PRAGMA user_version = 1; "
            "INSERT INTO crawls (started_at, status, seeds, config) "
            "VALUES ('x', 'running', '[]', '{}');"
            "INSERT INTO pages (url, crawl_id, depth, fetched_at, attempts, title) "
            "VALUES ('http://old.example/', 1, 0, 'x', 1, 'kept');"
            "INSERT INTO links VALUES ('http://old.example/', 'http://old.example/a'),"
            " ('http://old.example/', 'http://elsewhere.example/'); COMMIT;"
        )
    spec = SiteSpec(pages=3, extras=False)
    server = await aiohttp_server(make_app(spec))
    summary = await crawl(make_config([base_url(server)], storage__db=str(db)))
    assert summary.pages == len(spec.reachable())
    assert await rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert await rows(db, "SELECT title FROM pages WHERE url = 'http://old.example/'") == [
        ("kept",)
    ]
    # v4 moved the links into their page's row; the links view still lists them one per row
    old_links = "SELECT to_url FROM links WHERE from_url = 'http://old.example/' ORDER BY to_url"
    assert await rows(db, old_links) == [("http://elsewhere.example/",), ("http://old.example/a",)]
    statuses = await rows(db, "SELECT id, status FROM crawls ORDER BY id")
    # The v1 crawl that never finished, and a new one: its seeds differ, so no resume.
    assert statuses == [(1, "interrupted"), (2, "finished")]


async def test_resume_finds_the_crawl_of_the_same_seeds(aiohttp_server, make_config):
    from scraper.crawl.crawler import Crawler

    first, events = await serve(aiohttp_server, SiteSpec(pages=200, latency=0.05, extras=False), 10)
    other, _ = await serve(aiohttp_server, SiteSpec(pages=3, extras=False))
    config_a = make_config([base_url(first)])
    crawler = Crawler(config_a)
    run = asyncio.create_task(crawler.run())
    await asyncio.wait_for(events[10].wait(), 60)
    crawler.stop()
    assert (await run).status == "interrupted"
    config_b = make_config([base_url(other)], storage__db=config_a.storage.db)
    assert (await crawl(config_b)).crawl_id == 2
    resumed = await Crawler(config_a).run()
    assert (resumed.crawl_id, resumed.status, resumed.resumed) == (1, "finished", True)


def busy_workers(pid: int) -> list[psutil.Process]:
    """The parse workers of crawler `pid` that have used a second of CPU: stuck in a call."""
    workers = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.Error):
            if procworker.__name__ in child.cmdline() and child.cpu_times().user > 1.0:
                workers.append(child)
    return workers


async def test_kill_9_of_a_crawler_with_a_stuck_worker_ends_the_worker_and_resume_ends(
    aiohttp_server, tmp_path
):
    """A parse worker spinning in a backtracking regex is killed with the crawler (kill -9: the
    crawler has no say, and the worker reads no stdin while it spins). Then the resume, with a
    parse.timeout, records the page and finishes instead of spinning again."""
    server = await aiohttp_server(backtracking_site())
    root, db = base_url(server), tmp_path / "crawl.db"
    rule = ["--set", f"extract.heading={{css = 'h1', regex = '{BACKTRACKING}'}}",
            "--set", "parse.regex_timeout=1e6"]  # fmt: skip
    process = await start(root, db, *rule, "--set", "parse.timeout=100000")
    stuck: list[psutil.Process] = []
    for _ in range(600):  # until a worker has spun for a second of CPU (at most a minute)
        stuck = await asyncio.to_thread(busy_workers, process.pid)
        if stuck:
            break
        await asyncio.sleep(0.1)
    assert stuck, "no parse worker got stuck"
    process.kill()
    gone, alive = await asyncio.to_thread(psutil.wait_procs, stuck, 15)
    for orphan in alive:  # (a failure must not leave it spinning)
        orphan.kill()
    assert alive == [] and len(gone) == len(stuck)
    await asyncio.wait_for(process.communicate(), 10)
    code, _, err = await finish(await start(root, db, *rule, "--set", "parse.timeout=1"))
    assert code == 0, err
    assert "resuming crawl 1" in err
    found = dict(await rows(db, "SELECT url, error_kind FROM pages"))
    assert found[root + "evil"] == "parse"
    assert len(found) == 7 and list(found.values()).count(None) == 6


async def test_a_resumed_crawl_counts_what_a_host_stored_against_max_pages_per_host(
    aiohttp_server, make_config
):
    """crawl.max_pages_per_host counts the pages a host already has in the crawl, whichever run
    stored them (as crawl.max_pages does): a resumed crawl does not start the host's count from
    zero."""
    from scraper.crawl.crawler import Crawler

    cap = 40
    server, events = await serve(
        aiohttp_server, SiteSpec(pages=150, latency=0.05, extras=False), 10
    )
    config = make_config([base_url(server)], crawl__max_pages_per_host=cap)
    crawler = Crawler(config)
    run = asyncio.create_task(crawler.run())
    await asyncio.wait_for(events[10].wait(), 60)
    crawler.stop()
    assert (await run).status == "interrupted"
    ((first,),) = await rows(config.storage.db, "SELECT count(*) FROM pages")
    assert 0 < first < cap
    resumed = await Crawler(config).run()
    assert (resumed.crawl_id, resumed.status, resumed.resumed) == (1, "finished", True)
    assert await rows(config.storage.db, "SELECT count(*), count(DISTINCT url) FROM pages") == [
        (cap, cap)
    ]
