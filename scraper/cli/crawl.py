"""`scraper crawl` and `scraper worker`: run the Crawler with progress, stop it on signals,
print its summary.

`scraper worker` joins a running crawl on PostgreSQL (from any machine); `scraper crawl
--workers N` starts the crawl in this process and N - 1 workers beside it, each a process of its
own (its own event loop and parse processes), on the same command line's config.

The crawl's stack (aiohttp, rich) is imported when a crawl starts, not when this module is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import os
import platform
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from scraper.cli.common import EXIT_INTERRUPTED, config_path, default, load
from scraper.cli.results import print_stats
from scraper.config import Config
from scraper.crawl.credentials import Credentials, read_credentials
from scraper.errors import ConfigError
from scraper.store import open_results
from scraper.store.location import is_postgres

if TYPE_CHECKING:
    from scraper.cli.common import Commands
    from scraper.crawl.crawler import Crawler
    from scraper.models import SpiderRef
    from scraper.store.base import CrawlSummary


def add_parsers(commands: Commands, common: argparse.ArgumentParser) -> None:
    crawl = commands.add_parser(
        "crawl",
        parents=[common],
        help="crawl the seeds into the database",
        description="Crawl from the seeds (or crawl.seeds) into a SQLite file or a PostgreSQL\n"
        "database (storage.db). Running the same command again resumes a crawl that did\n"
        "not finish.",
        epilog="examples:\n"
        "  scraper crawl https://example.com/ --max-pages 500 --db data/example.db\n"
        "  scraper crawl --seeds-file sites.txt --set crawl.max_depth=2\n"
        "  scraper crawl https://a.example/ https://b.example/ --workers 2 \\\n"
        "      --db postgresql://me@localhost/crawls   # one host is one process's at a time",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    crawl.add_argument(
        "seeds", nargs="*", metavar="SEED", help="start URLs (replace crawl.seeds; default: none)"
    )
    crawl.add_argument(
        "--seeds-file",
        metavar="FILE",
        help='start URLs, one a line (# comments; "-": standard input): crawl.seeds_file',
    )
    crawl.add_argument(
        "--spider",
        metavar="FILE.py:CLASS",
        help="a spider whose callbacks parse the pages: FILE.py:Class or module.path:Class "
        "(crawl.spider)",
    )
    crawl.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help=f"fetch.concurrency (default: {default('fetch.concurrency')})",
    )
    crawl.add_argument(
        "--max-pages",
        type=int,
        metavar="N",
        help=f"crawl.max_pages (default: {default('crawl.max_pages')})",
    )
    crawl.add_argument(
        "--warc",
        metavar="FOLDER",
        help="archive every fetch into WARC files in FOLDER (storage.warc; default: none)",
    )
    crawl.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    crawl.add_argument(
        "--fresh", action="store_true", help="start a new crawl even if the last one did not finish"
    )
    crawl.add_argument(
        "--workers",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="crawl with N processes on this machine (PostgreSQL only): this one and N - 1 "
        "`scraper worker`s; a host is one process's at a time (politeness), so N processes "
        "need N or more hosts to gain anything (default: 1)",
    )
    crawl.add_argument(
        "--debug-loop",
        action="store_true",
        help="asyncio debug mode: log callbacks that hold the loop over 100 ms, and where "
        "un-awaited coroutines were made (slower; to find what stalls the loop)",
    )
    crawl.set_defaults(command=_crawl_command)

    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="join a running crawl on PostgreSQL, from any machine",
        description="Work on a running crawl beside its other processes: claim hosts, crawl "
        "them, and exit when the whole crawl is over. Give it the crawl's config (the same "
        "config.toml and --set).",
    )
    worker.add_argument(
        "--crawl",
        type=_crawl_id,
        metavar="ID",
        help='which crawl (default: the latest); "-": read its id from standard input once '
        "the crawl has begun (how `crawl --workers` starts its workers)",
    )
    worker.add_argument(
        "--spider",
        metavar="FILE.py:CLASS",
        help="the crawl's spider (crawl.spider): a worker joins only with the same source",
    )
    worker.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    worker.set_defaults(command=_worker_command)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _crawl_id(text: str) -> int | str:
    return text if text == "-" else _at_least_one(text)


def _crawl_command(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    if args.seeds:
        values["crawl.seeds"] = list(args.seeds)
    if args.seeds_file is not None:
        values["crawl.seeds_file"] = args.seeds_file
    if args.concurrency is not None:
        values["fetch.concurrency"] = args.concurrency
    if args.max_pages is not None:
        values["crawl.max_pages"] = args.max_pages
    if args.warc is not None:
        values["storage.warc"] = args.warc
    config, spider = load_with_spider(args, values)
    if args.workers > 1 and not is_postgres(config.storage.db):
        raise ConfigError(
            f"--workers {args.workers}: several processes on one crawl need PostgreSQL "
            "(storage.db = postgresql://...); a SQLite file has one"
        )
    if args.workers > 1:
        _refuse_politeness_by_ip(config, f"--workers {args.workers}")
    workers = _worker_command_line(args) if args.workers > 1 else None
    # The secrets config.toml names, and the logins of seeds given as user:pass@host: read now,
    # so a missing one is a line and exit 2 before the crawl's row exists.
    credentials = read_credentials(config, args.seeds)
    summary = asyncio.run(
        run_crawl(
            config,
            credentials=credentials,
            quiet=args.quiet,
            fresh=args.fresh,
            workers=(args.workers - 1, workers),
            # (--log-format json: stderr is for machines; the crawls row keeps the config)
            opening=None if args.quiet or args.log_format == "json" else _which_config(args),
            spider=spider,
        ),
        debug=args.debug_loop,
    )
    print_stats(config.storage.db, summary.crawl_id)  # summary.db has no password to connect
    if summary.status == "interrupted":
        print("Run the same command again to resume this crawl where it stopped.")
        return EXIT_INTERRUPTED
    return 0


def load_with_spider(
    args: argparse.Namespace, values: dict[str, Any]
) -> tuple[Config, SpiderRef | None]:
    """The config, with its spider's settings between config.toml and --set, and the spider
    (`--spider`, else crawl.spider), imported here, at the edge, before any crawl begins."""
    spec = getattr(args, "spider", None) or load(args, dict(values)).crawl.spider
    if not spec:
        return load(args, values), None
    from scraper.spider.load import find_spider, spider_settings

    cls, ref = find_spider(spec)
    return load(args, values, below=spider_settings(cls, spec)), ref


def _which_config(args: argparse.Namespace) -> str:
    """A ./config.toml applies without a flag: the crawl's first line says so (or that none did)."""
    path = config_path(args)
    return f"config: {path}" if path is not None else "config: none (defaults, --set and seeds)"


def _worker_command(args: argparse.Namespace) -> int:
    db = load(args, {}).storage.db
    if not is_postgres(db):
        raise ConfigError(
            f"worker: {db} is a SQLite file, which has one crawl process; "
            "workers share a PostgreSQL database (--db postgresql://...)"
        )
    wanted = args.crawl
    if wanted == "-":
        wanted = _crawl_id_from_stdin()
        if wanted is None:
            return 0  # the crawl did not begin: its own process says why
    with open_results(db) as reader:
        crawl = reader.find_crawl(wanted)
    # The crawl's seeds, as it stored them: they make its scope (crawl.allowed_domains = []).
    config, spider = load_with_spider(args, {"crawl.seeds": json.loads(crawl.seeds)})
    _refuse_politeness_by_ip(config, "worker")
    crawl_id = crawl.id
    credentials = read_credentials(config)
    summary = asyncio.run(
        run_crawl(config, credentials=credentials, quiet=args.quiet, join=crawl_id, spider=spider)
    )
    print(
        f"Worker on crawl {summary.crawl_id} {summary.status}: "
        f"{summary.pages} pages in the crawl so far"
    )
    return EXIT_INTERRUPTED if summary.status == "interrupted" else 0


def _crawl_id_from_stdin() -> int | None:
    """The id that `crawl --workers` writes once its crawl has begun (None: it ended first).
    The crawl's stack is imported while the crawl's own process starts it: a worker's imports
    (~0.65 s of CPU here) used to follow that start, now they overlap it."""
    for module in ("scraper.cli.progress", "scraper.crawl.crawler"):  # what run_crawl imports
        importlib.import_module(module)

    line = sys.stdin.readline(64).strip()
    if not line:
        return None
    if not line.isdecimal():
        raise ConfigError(f"worker --crawl -: standard input gave {line!r}, not a crawl id")
    return int(line)


def _refuse_politeness_by_ip(config: Config, what: str) -> None:
    """Host leases keep a host (or, with "domain", a registrable domain) with one process at a
    time; an IP address is known only after each process's own DNS look-up, and machines may
    resolve a name differently, so no lease can hold a slot keyed on it across processes."""
    if config.fetch.politeness_key == "ip":
        raise ConfigError(
            f'{what}: fetch.politeness_key = "ip" cannot hold across processes (each resolves '
            'names on its own); use "host" or "domain", or crawl in one process'
        )


def _worker_command_line(args: argparse.Namespace) -> list[str]:
    """A `scraper worker` with this command's config, told its crawl's id on its stdin."""
    line = [sys.executable, "-m", "scraper", "worker", "-q", "--log-level", args.log_level]
    if args.config is not None:
        line += ["--config", str(args.config)]
    for item in args.overrides:
        line += ["--set", item]
    if args.db:
        line += ["--db", args.db]
    if args.spider:
        line += ["--spider", args.spider]
    if args.concurrency is not None:
        line += ["--set", f"fetch.concurrency={args.concurrency}"]
    if args.max_pages is not None:
        line += ["--set", f"crawl.max_pages={args.max_pages}"]
    if args.warc is not None:  # (a TOML string: JSON's quoting is TOML's for a basic string)
        line += ["--set", f"storage.warc={json.dumps(args.warc)}"]
    if args.log_file is not None:
        line += ["--log-file", str(args.log_file)]
    return [*line, "--crawl", "-"]


async def run_crawl(
    config: Config,
    *,
    quiet: bool,
    credentials: Credentials | None = None,
    fresh: bool = False,
    join: int | None = None,
    workers: tuple[int, list[str] | None] = (0, None),
    opening: str | None = None,
    spider: SpiderRef | None = None,
) -> CrawlSummary:
    """Crawl as `config` says, showing progress unless `quiet`, until done or stopped by a
    signal; `fresh`: start a new crawl even if the last one did not finish; `join`: work on
    that running crawl beside its other processes; `workers`: how many `scraper worker`s to
    start beside this process once its crawl runs, and their command line; `opening`: the line
    said first, once the crawl has begun (so a database that cannot be opened stays one line);
    `credentials`: the secrets `config` names, read (None: the crawler reads them)."""
    from scraper.cli.progress import choose_mode, show_progress
    from scraper.crawl.crawler import Crawler

    say = _Announcer(opening)
    crawler = Crawler(
        config,
        fresh=fresh,
        announce=say,
        join=join,
        quiet=quiet,
        spider=spider,
        credentials=credentials,
    )
    _settle_the_garbage_collector()
    if asyncio.get_running_loop().get_debug():
        _say("asyncio debug mode (--debug-loop): callbacks holding the loop over 100 ms are logged")
    mode = choose_mode(quiet=quiet, stream=sys.stdout)
    extra, command = workers
    opened = asyncio.create_task(say.when(crawler.began))
    try:
        with _stop_on_signals(crawler):
            async with show_progress(crawler.snapshot, mode, config.log.interval):
                if not extra or command is None:
                    return await crawler.run()
                return await _with_workers(crawler, extra, command)
    finally:
        opened.cancel()


class _Announcer:
    """`_say`, with an opening line said before any other, or once `began` is set."""

    def __init__(self, opening: str | None) -> None:
        self._opening = opening

    def __call__(self, message: str) -> None:
        self._open()
        _say(message)

    async def when(self, began: asyncio.Event) -> None:
        await began.wait()
        self._open()

    def _open(self) -> None:
        if self._opening is not None:
            _say(self._opening)
            self._opening = None


async def _with_workers(crawler: Crawler, count: int, command: list[str]) -> CrawlSummary:
    """Run the crawl here and `count` workers beside it; they end with the crawl, or when this
    process is stopped (Ctrl-C, SIGTERM: passed on to them). A worker that fails does not stop
    the others: its hosts go to them when its leases expire."""
    # Started now, and told the crawl's id on their stdin once it has one: their start (a
    # Python and its imports) overlaps this one's instead of following it. Sessions of their
    # own: a terminal's Ctrl-C reaches this process only, which passes one SIGTERM on (a second
    # signal would make them quit at once).
    processes = [
        await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,  # relayed whole lines: the live display stays whole
            start_new_session=True,
        )
        for _ in range(count)
    ]
    try:
        return await _crawl_beside(crawler, processes)
    except BaseExceptionGroup as group:
        # The other tasks only wait and pass signals on: the error is the crawl's, raised as
        # one process raises it (a ScraperError is one line and exit code 2, not a traceback).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group
        raise


async def _relay_lines(process: asyncio.subprocess.Process, n: int) -> None:
    """A worker's stderr, a whole line at a time, through this process's stderr (which the live
    display draws above): written straight to the terminal, a worker's log broke the display
    mid-line. Its lines are its own log's, already escaped (terminal.visible); one over the
    stream's 64 KiB limit is left out, and says so."""
    assert process.stderr is not None
    while True:
        try:
            line = await process.stderr.readline()
        except ValueError:  # longer than the limit: the stream skips it
            print(f"worker {n}: (a log line over 64 KiB left out)", file=sys.stderr)
            continue
        if not line:
            return
        print(f"worker {n}: {line.decode(errors='replace').rstrip()}", file=sys.stderr)


async def _crawl_beside(
    crawler: Crawler, processes: list[asyncio.subprocess.Process]
) -> CrawlSummary:
    async with asyncio.TaskGroup() as tasks:
        crawling = tasks.create_task(crawler.run(), name="crawl")
        began = tasks.create_task(crawler.began.wait(), name="crawl began")
        await asyncio.wait([crawling, began], return_when=asyncio.FIRST_COMPLETED)
        began.cancel()
        await _tell(processes, crawler.crawl_id)
        if crawler.crawl_id is None:
            try:
                return await crawling  # it failed before its crawl began
            finally:
                for process in processes:
                    await process.wait()  # each read nothing, and ended

        def pass_on() -> None:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)

        async def on_stop() -> None:
            await crawler.stopped.wait()
            pass_on()

        relay = tasks.create_task(on_stop(), name="pass the stop on")
        for n, process in enumerate(processes, 1):
            tasks.create_task(_relay_lines(process, n), name=f"worker {n}'s log")
        try:
            summary = await crawling
        except BaseException:
            pass_on()
            raise
        finally:
            codes = [await process.wait() for process in processes]
            relay.cancel()
        failed = [code for code in codes if code not in (0, EXIT_INTERRUPTED)]
        if failed:
            _say(
                f"{len(failed)} of {len(processes)} workers failed (exit codes {failed}); see above"
            )
        return summary


async def _tell(processes: list[asyncio.subprocess.Process], crawl_id: int | None) -> None:
    """Write the crawl's id to each worker's stdin and close it (nothing: the crawl did not
    begin). A worker that died meanwhile is not told (its exit code says why)."""
    for process in processes:
        stdin = process.stdin
        assert stdin is not None
        with contextlib.suppress(ConnectionError):
            if crawl_id is not None:
                stdin.write(f"{crawl_id}\n".encode())
                await stdin.drain()
            stdin.close()


def _settle_the_garbage_collector() -> None:
    """Fewer and shorter GC pauses while crawling. Everything allocated so far (modules, the
    config) lives as long as the process: freezing it keeps every later full collection from
    scanning it again. And a crawl allocates fast, mostly short-lived objects: collecting the
    youngest generation every 10,000 allocations instead of 700 does far less work. Measured on
    the 10,000-page benchmark: loop-lag p99 21-51 ms -> 11-18 ms, and 15% more pages/s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _say(message: str) -> None:
    print(f"scraper: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _stop_on_signals(crawler: Crawler) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully (store what was parsed). Second: quit at once;
    SQLite's transactions keep the database consistent either way.

    The second must work even when the event loop is stuck (in C code that runs no Python
    signal handler: a hostile page parsed inline, say), when no handler of ours can run. So the
    kernel is asked to restore the signal's default action as it delivers the first one
    (SA_RESETHAND): the second ends the process by itself, as a shell expects of Ctrl-C (the
    shell reports 130 or 143). Where that cannot be asked, the second signal the loop sees
    exits with 130."""
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        if stopping:
            os._exit(EXIT_INTERRUPTED)
        stopping = True
        print(
            f"scraper: {signal.Signals(signum).name}: stopping; again to quit at once",
            file=sys.stderr,
        )
        crawler.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
        _default_after_first(signum)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


_SA_RESETHAND = 0x80000000  # <asm-generic/signal-defs.h>


def _default_after_first(signum: int) -> bool:
    """Have the kernel restore `signum`'s default action once it has delivered it (keeping the
    handler in place for that first delivery). False where this is not known to work."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64", "arm64"):
        return False
    import ctypes  # here: only a crawl needs it

    class SigAction(ctypes.Structure):
        """glibc's and musl's `struct sigaction` on Linux (x86-64 and arm64 alike)."""

        _fields_: ClassVar[list[tuple[str, Any]]] = [
            ("handler", ctypes.c_void_p),
            ("mask", ctypes.c_ulong * 16),
            ("flags", ctypes.c_uint),
            ("restorer", ctypes.c_void_p),
        ]

    libc = ctypes.CDLL(None, use_errno=True)
    action = SigAction()
    if libc.sigaction(signum, None, ctypes.byref(action)) != 0:
        return False
    action.flags |= _SA_RESETHAND
    return bool(libc.sigaction(signum, ctypes.byref(action), None) == 0)
