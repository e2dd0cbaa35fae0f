"""Seeds from a file: streamed, bad lines counted and shown, the crawls row keeping a digest
and count (resume matches on it), and the scope of a crawl from a file: each page's own site."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

from helpers import Site, base_url, rows, scraper_cli
from scraper.crawl.crawler import Crawler
from scraper.crawl.seeds import SeedFile
from scraper.store import open_results
from scraper.urls import KEEP_QUERY, Scope


async def test_a_seeds_file_is_crawled_and_its_bad_lines_reported(aiohttp_server, tmp_path):
    sites = [Site(1) for _ in range(3)]
    servers = [await aiohttp_server(site.app) for site in sites]
    lines = ["# three sites", "", *(base_url(s) for s in servers[:2]), "not a url",
             "ftp://example.com/", f"  {base_url(servers[2])}  "]  # fmt: skip
    await asyncio.to_thread((tmp_path / "seeds.txt").write_text, "\n".join(lines) + "\n")
    db = tmp_path / "crawl.db"
    code, _, err = await scraper_cli(
        "crawl", "--seeds-file", "seeds.txt", "--db", str(db), "-q",
        "--set", "parse.workers=0", "--set", "crawl.sitemaps=false",
        "--set", "fetch.block_private=false", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert "3 seeds from seeds.txt; 2 lines skipped: line 5: 'not a url'" in err
    assert "line 6: 'ftp://example.com/'" in err
    assert all(len(site.fetched()) == 2 for site in sites)  # each seed and its one page
    ((count, digest, sample),) = await rows(
        db, "SELECT seeds_count, seeds_digest, seeds FROM crawls"
    )
    assert count == 3 and digest.startswith("sha256:")
    assert json.loads(sample) == [base_url(s) for s in servers]


async def test_seeds_from_standard_input(aiohttp_server, tmp_path):
    site = Site(2)
    server = await aiohttp_server(site.app)
    seeds = tmp_path / "seeds.txt"
    await asyncio.to_thread(seeds.write_text, base_url(server) + "\n")
    db = tmp_path / "crawl.db"
    with seeds.open("rb") as stdin:  # (opening is not reading: no blocking I/O on the loop)
        code, _, err = await scraper_cli(
            "crawl", "--seeds-file", "-", "--db", str(db), "-q", "--set", "parse.workers=0",
            "--set", "crawl.sitemaps=false", "--set", "fetch.block_private=false",
            cwd=tmp_path, stdin=stdin,
        )  # fmt: skip
    assert code == 0, err
    assert len(site.fetched()) == 3


async def test_a_crawl_from_a_seeds_file_resumes_on_its_digest(
    aiohttp_server, make_config, tmp_path
):
    site = Site(30, latency=0.05)
    under_way = site.reached(5)
    server = await aiohttp_server(site.app)
    seeds = tmp_path / "seeds.txt"
    await asyncio.to_thread(seeds.write_text, f"# one site\n{base_url(server)}\n")
    config = make_config(
        [], crawl__seeds_file=str(seeds), fetch__per_host_concurrency=1, fetch__block_private=False
    )
    crawler = Crawler(config)
    run = asyncio.create_task(crawler.run())
    await asyncio.wait_for(under_way.wait(), 60)
    crawler.stop()
    assert (await run).status == "interrupted"
    await asyncio.to_thread(
        seeds.write_text, f"{base_url(server)}\n# the same seeds, written differently\n"
    )
    resumed = await Crawler(config).run()
    assert (resumed.crawl_id, resumed.status, resumed.resumed) == (1, "finished", True)
    assert resumed.pages == 31


def test_seeds_are_read_a_batch_at_a_time(tmp_path: Path) -> None:
    """Three times the seeds, the same peak of Python allocations (one batch of 10,000, ~3 MB):
    a million take no more memory than ten thousand. Held as a list, 60,000 would be ~18 MB."""

    def peak(count: int) -> int:
        path = tmp_path / f"seeds-{count}.txt"
        path.write_text("".join(f"http://host{n}.example/\n" for n in range(count)))
        seeds = SeedFile(str(path), KEEP_QUERY)

        async def read() -> int:
            listed = await seeds.scan()
            total = 0
            async for batch in seeds.batches():
                total += len(batch)
            assert listed.count == total == count
            return total

        tracemalloc.start()
        try:
            asyncio.run(read())
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(20_000), peak(60_000)
    assert large < 1.2 * small
    assert large < 8 * 1024 * 1024


def test_the_scope_of_a_seeds_file_is_each_pages_own_site() -> None:
    scope = Scope(same_site=True)
    page = "http://www.example.co.uk/a"
    assert scope.allows("http://shop.example.co.uk/x", base=page)  # the same registrable domain
    assert not scope.allows("http://other.co.uk/", base=page)
    assert not Scope(same_site=True, include_subdomains=False).allows(
        "http://shop.example.co.uk/x", base=page
    )
    assert not Scope(same_site=True, denied_domains=("example.co.uk",)).allows(
        "http://shop.example.co.uk/x", base=page
    )


async def test_scraper_crawls_says_how_many_seeds_a_file_had(aiohttp_server, make_config, tmp_path):
    site = Site(0)
    server = await aiohttp_server(site.app)
    names = {f"h{n}.test": "127.0.0.1" for n in range(12)}
    seeds = tmp_path / "seeds.txt"
    lines = "".join(f"http://{name}:{server.port}/\n" for name in names)
    await asyncio.to_thread(seeds.write_text, lines)
    config = make_config(
        [], crawl__seeds_file=str(seeds), fetch__resolve=names, fetch__block_private=False
    )
    assert (await Crawler(config).run()).pages == 12

    def listed() -> str:
        with open_results(config.storage.db) as reader:
            crawls = reader.list_crawls()
            (row,) = crawls.rows
            return str(dict(zip(crawls.columns, row, strict=True))["seeds"])

    shown = await asyncio.to_thread(listed)
    assert shown.endswith("] (12 seeds)") and json.loads(shown.partition(" (")[0])[0] == (
        f"http://h0.test:{server.port}/"
    )
