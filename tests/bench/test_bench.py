"""The benchmark's own tools, on a small site: the site on disk, its servers, the CPU accounting,
and every crawler of the table storing every page exactly once. No figure is asserted here:
performance targets live in `make bench` only."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import ROOT
from bench.harness import format_ratios, format_table, make_cases
from bench.measure import RunResult, Stored, Usage, run_crawler
from bench.server import Server, lua_modules, nginx_binary, serve
from bench.site import cached_site, file_for, read_manifest, write_site
from scraper.demosite import SiteSpec

SPEC = SiteSpec(pages=200, page_bytes=4000, extras=False, seed=5)
ANCHOR = re.compile(r'<li><a href="([^"]*)">')  # the in-site links; the footer's are off-site
SERVERS = ["aiohttp", "nginx"]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_the_written_site_holds_what_its_manifest_claims(tmp_path: Path) -> None:
    manifest = write_site(SPEC, tmp_path)
    assert read_manifest(tmp_path) == manifest
    pages = sorted((tmp_path / "page").iterdir())
    lists = sorted((tmp_path / "list").iterdir())
    html = [tmp_path / "index.html", *pages, *lists]
    assert (len(pages), len(lists), len(html)) == (manifest.pages, manifest.lists, manifest.files)
    assert len(pages) == SPEC.pages
    hrefs = {path: ANCHOR.findall(path.read_text()) for path in html}
    assert sum(map(len, hrefs.values())) == manifest.links
    assert sum(path.stat().st_size for path in html) == manifest.bytes
    assert manifest.reachable == len(SPEC.reachable())
    assert hrefs[tmp_path / "page" / "7"] == [href for href, _ in SPEC.page_links(7)]


def test_a_cached_site_is_written_once(tmp_path: Path) -> None:
    root, manifest = cached_site(SPEC, tmp_path)
    written = (root / "page" / "0").stat().st_mtime_ns
    again, same = cached_site(SPEC, tmp_path)
    assert (again, same) == (root, manifest)
    assert (root / "page" / "0").stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == [root.name]  # no building folder left


def test_a_site_that_cannot_be_static_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extras=False"):
        write_site(SiteSpec(pages=5), tmp_path)


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("/", "", "index.html"),
        ("/page/12", "", "page/12"),
        ("/list", "page=3", "list/3.html"),
        ("/list", "page=../x", None),
        ("/page/../../etc/passwd", "", None),
        ("/other", "", None),
    ],
)
def test_urls_map_to_files(path: str, query: str, name: str | None) -> None:
    assert file_for(path, query) == name


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = cached_site(SPEC, tmp_path_factory.mktemp("sites"))
    return root


def _require(kind: str, latency: float = 0.0) -> None:
    if kind == "nginx" and nginx_binary() is None:
        pytest.skip("nginx is not installed (make bench installs it)")
    if kind == "nginx" and latency and lua_modules() is None:
        pytest.skip("nginx's Lua module is not installed (make bench installs it)")


@pytest.mark.parametrize("kind", SERVERS)
def test_both_servers_serve_the_site(site: Path, kind: str) -> None:
    _require(kind)
    with serve(site, prefer=kind) as server:
        assert server.kind == kind
        for path, file in [
            ("", "index.html"),
            ("page/3", "page/3"),
            ("list?page=1", "list/1.html"),
        ]:
            assert get(server.url + path) == (200, (site / file).read_bytes())
        assert get(server.url + "page/%33") == (200, (site / "page/3").read_bytes())
        assert get(server.url + "page/999")[0] == 404
        assert get(server.url + "manifest.json")[0] == 404


@pytest.mark.parametrize("kind", SERVERS)
def test_both_servers_add_the_latency(site: Path, kind: str) -> None:
    _require(kind, latency=0.1)
    with serve(site, latency=0.1, prefer=kind) as server:
        assert server.kind == kind
        started = time.monotonic()
        assert get(server.url + "page/3")[0] == 200
        assert time.monotonic() - started >= 0.1  # a lower bound: never faster than asked


ORPHAN = """
import subprocess, sys
# Start a CPU-burning grandchild and exit without waiting for it: it becomes an orphan.
subprocess.Popen([sys.executable, "-c",
    "import time\\nwhile time.process_time() < 0.3: pass"])
"""


def test_rusage_counts_the_cpu_of_orphaned_descendants(tmp_path: Path) -> None:
    report = tmp_path / "usage.json"
    command = [sys.executable, "-m", "bench.rusage", str(report)]
    subprocess.run([*command, "--", sys.executable, "-c", ORPHAN], check=True, timeout=30)
    usage = json.loads(report.read_text())
    assert usage["returncode"] == 0
    assert usage["orphans_counted"]
    assert usage["user_s"] + usage["sys_s"] >= 0.3


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[Server]:
    with serve(site) as server:  # nginx when installed, as in the benchmark
        yield server


@pytest.mark.parametrize("crawler", ["ours", "ours-spider", "scrapy", "bare", "bare-inline"])
def test_every_crawler_stores_every_page_once(site: Path, server: Server, crawler: str) -> None:
    if crawler == "scrapy":
        pytest.importorskip("scrapy")
    expected = {server.url + path.lstrip("/") for path in SPEC.reachable()}
    result = run_crawler(crawler, server.url, expected, concurrency=16, workers=1, timeout=60)
    stored = result.stored
    assert stored.once_each, stored
    assert (stored.rows, stored.errors) == (len(expected), 0)
    assert result.usage.returncode == 0
    assert result.usage.cpu_s > 0
    assert 0 < result.usage.main_peak_rss <= result.usage.tree_peak_rss
    assert result.pages_per_s > 0
    usage = result.usage
    split = usage.loop_thread_s + usage.other_threads_s + usage.children_s
    assert usage.loop_thread_s > 0 and split <= usage.cpu_s + 0.05  # sampled: at most the total


def _result(crawler: str, pages: int, span: float, cpu: float, counters: dict) -> RunResult:
    usage = Usage(wall_s=span + 1, cpu_s=cpu, main_peak_rss=50 << 20, tree_peak_rss=120 << 20,
                  returncode=0, timed_out=False)  # fmt: skip
    stored = Stored(rows=pages, distinct=pages, missing=0, unexpected=0, errors=0, span_s=span,
                    counters=counters)  # fmt: skip
    return RunResult(crawler, usage, stored)


def test_the_table_shows_lag_and_stages_only_when_the_crawl_reports_them() -> None:
    reported = {
        "loop_lag_ms": {"p50": 0.42, "p99": 7.5, "max": 30.0},
        "stages": {
            "fetch": {"busy_s": 9.5, "load_pct": 61.6, "queue_mean": 3.4},
            "parse": {"busy_s": 4.25},  # an older crawl's row: busy seconds only
            "sink": {"busy_s": 0.5, "load_pct": 8.0, "queue_mean": 0.2},
        },
    }
    ours = _result("ours", 1001, 2.0, 1.0, reported)
    scrapy = _result("scrapy", 1001, 10.0, 10.0, {})
    table = format_table({"ours": [ours], "scrapy": [scrapy]}).splitlines()
    assert len(table) == 4
    assert "| 500 " in table[2] and "| 1.00 " in table[2]  # pages/s, CPU s per 1,000 pages
    assert "0.4 / 7.5" in table[2] and "fetch 62% q3, parse 4.2s, sink 8% q0" in table[2]
    assert table[3].count("n/a") == 2
    case = make_cases(1000, 10, 0.2)["latency"]
    ratios = format_ratios(case, {"ours": [ours], "scrapy": [scrapy]}, concurrency=64)
    assert "ours ÷ scrapy: pages/s 5.00×, CPU per page 0.10×" in ratios
    assert "320 pages/s" in ratios and "ours: 156% of the ceiling" in ratios


def test_rounds_show_the_median_and_pair_the_ratios() -> None:
    # pages/s: ours 500, 250, 1000 (median 500); bare 500, 125, 2000 (median 500)
    ours = [_result("ours", 1001, span, 1.0, {}) for span in (2.0, 4.0, 1.0)]
    bare = [_result("bare", 1001, span, 1.0, {}) for span in (2.0, 8.0, 0.5)]
    scrapy = [_result("scrapy", 1001, 20.0, 10.0, {})]
    table = format_table({"ours": ours, "bare": bare, "scrapy": scrapy}).splitlines()
    assert "| 500 " in table[2] and "| 500 250 1000 " in table[2]
    assert "| 500 125 2000 " in table[3] and "| 50 " in table[4]
    ratios = format_ratios(
        make_cases(1000, 10, 0.2)["cpu"], {"ours": ours, "bare": bare, "scrapy": scrapy}, 64
    )
    # round by round 1.00, 2.00 and 0.50: the median is 1.00, though each median run is 500
    assert "ours ÷ bare: pages/s 1.00× (rounds: 1.00, 2.00, 0.50)" in ratios
    assert "ours ÷ scrapy: pages/s 10.00×, CPU per page 0.10×" in ratios  # Scrapy: its one run


def test_the_benchmark_runs_as_a_module_of_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--pages" in result.stdout and "--crawlers" in result.stdout


def test_the_package_imports_no_developer_tool_and_no_test_code() -> None:
    """bench/ and tests/ stay out of the wheel: nothing under scraper/ may import them."""
    outside = {"bench", "tests", "pgserver", "helpers", "conftest"}
    found = []
    for path in sorted((ROOT / "scraper").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [f"{path}: {n}" for n in names if n.split(".")[0] in outside]
    assert found == []


def test_broad_counts_politeness_violations_from_the_servers_log() -> None:
    from bench.broad import steady_rate, violations

    log = [
        ("a", "/robots.txt", 0.0, 0.5),
        ("a", "/", 1.0, 1.5),  # kept: a second after the last start, the last one over
        ("a", "/p/0", 1.4, 1.9),  # both: in flight with the last, 0.4 s after its start
        ("b", "/", 0.0, 0.1),
        ("b", "/p/0", 0.995, 1.1),  # within the tolerance of the server's own noise
    ]
    assert violations(log, delay=1.0) == (1, 1)
    assert steady_rate([float(n) for n in range(101)]) == 1.0


def test_a_small_broad_crawl_stores_every_page_once(tmp_path: Path) -> None:
    from bench.broad import run_broad

    result = run_broad(30, pages=2, latency=0.05, delay=0.2, concurrency=8, timeout=120)
    assert result.pages_stored == result.pages_distinct == result.pages_expected == 60
    assert result.errors == 0
    assert result.requests == 30 * (2 + 2)  # robots.txt and the sitemap probe of each site
    assert result.violations_overlap == 0  # (a request cannot start before the last's answer)


@pytest.mark.parametrize("crawler", ["ours-shop", "scrapy-shop"])
def test_both_shop_spiders_store_every_listing_and_product_once(
    tmp_path: Path, crawler: str
) -> None:
    if crawler == "scrapy-shop":
        pytest.importorskip("scrapy")
    from bench.shop import cached_shop, paths

    root = cached_shop(120, tmp_path)
    with serve(root) as server:
        expected = {server.url + path.lstrip("/") for path in paths(120)}
        result = run_crawler(crawler, server.url, expected, concurrency=8, workers=1, timeout=60)
    assert result.stored.once_each, result.stored
    assert (result.stored.rows, result.stored.errors) == (len(expected), 0) == (120 + 3, 0)
