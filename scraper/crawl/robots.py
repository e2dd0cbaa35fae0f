"""robots.txt: fetched once per host and cached for the crawl, parsed with protego.

RFC 9309's odd cases: a 4xx robots.txt means everything is allowed; a 5xx or an unreachable host
means nothing is for now: the scheduler holds the host and asks again later (each time after the
fetch stage's own retries), and only after a few rounds records its URLs as skipped. Only the
first 500 KiB are read and parsed (a larger file is cut at its last whole line there); a robots.txt
that redirects outside the crawl's scope, or too many times, counts as none (as a 4xx).
Crawl-delay becomes the host's minimum delay, unless it is over fetch.max_crawl_delay: then the
host is skipped, as is one whose address fetch.block_private refuses. Its Sitemap: lines go to the
sitemap stage.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable

from protego import Protego

from scraper.crawl.ports import FetchStage
from scraper.models import CrawlRequest, ErrorKind
from scraper.urls import origin

log = logging.getLogger(__name__)

ROUNDS = 3  # rounds of fetching an unavailable robots.txt before its host is given up

MAX_ROBOTS_BYTES = 500 * 1024  # Google's limit; the rest of a larger file is ignored


class RobotsRules:
    """What one host's robots.txt allows our user agent. `unavailable`: robots.txt could not be
    read (ask again later); `refused`: the host is skipped for the crawl, with this reason, and
    its URLs are recorded with error_kind `skip_kind`."""

    def __init__(
        self,
        parser: Protego | None,
        user_agent: str,
        *,
        unavailable: str | None = None,
        refused: str | None = None,
        skip_kind: ErrorKind = ErrorKind.ROBOTS,
        sitemaps: tuple[str, ...] = (),
    ) -> None:
        self._parser = parser
        self._agent = user_agent
        self._unavailable = unavailable
        self.refused = refused
        self.skip_kind = skip_kind
        self.sitemaps = sitemaps

    @property
    def unavailable(self) -> bool:
        return self._unavailable is not None

    @property
    def delay(self) -> float | None:
        if self._parser is None:
            return None
        delay = self._parser.crawl_delay(self._agent)
        return float(delay) if delay is not None else None

    def skip_reason(self, url: str) -> str | None:
        if self.refused is not None:
            return self.refused
        if self._unavailable is not None:
            return self._unavailable
        if self._parser is not None and not self._parser.can_fetch(url, self._agent):
            return "disallowed by robots.txt"
        return None


ALLOW_ALL = RobotsRules(None, "")


class RobotsGate:
    """The scheduler's gate: the rules for a host, fetched once and kept in a bounded cache; and
    the moment a site is first met, when its sitemaps can be read."""

    def __init__(
        self,
        fetcher: FetchStage,
        user_agent: str,
        *,
        timeout: float,
        obey: bool = True,
        max_crawl_delay: float = float("inf"),
        on_sitemaps: Callable[[str, tuple[str, ...]], None] = lambda origin, urls: None,
        on_fetched: Callable[[str, str], None] = lambda origin, record: None,
        cache_size: int = 10_000,
        retry: float = 30.0,
        rounds: int = ROUNDS,
    ) -> None:
        """`retry`: seconds between two rounds of asking for an unavailable robots.txt (5xx,
        no answer), `rounds` in all."""
        self._fetcher = fetcher
        self._retry = retry
        self._rounds = rounds
        self._obey = obey  # False: robots.txt is not read; every host allows everything
        self._agent = user_agent
        self._timeout = timeout
        self._max_delay = max_crawl_delay
        self._on_sitemaps = on_sitemaps
        # Told of each robots.txt read (its site, and a record `adopt` takes back): with several
        # processes on a crawl, the host's next owner takes its rules from it.
        self._on_fetched = on_fetched
        self._cache: OrderedDict[str, RobotsRules] = OrderedDict()
        self._cache_size = cache_size

    async def settled_rules(self, host: str, sample_url: str) -> RobotsRules:
        """The host's rules once they are settled: an unavailable robots.txt is asked for again
        (RFC 9309: everything is disallowed meanwhile), `retry` seconds apart, until it answers
        or `rounds` have passed, after which its URLs are recorded as unavailable."""
        for round_ in range(1, self._rounds + 1):
            rules = await self.rules(host, sample_url)
            if not rules.unavailable or round_ == self._rounds:
                break
            log.warning(
                "%s: %s; asking again in %.0f s (round %d of %d)",
                host, rules.skip_reason(""), self._retry, round_, self._rounds,
            )  # fmt: skip
            self.forget(sample_url)
            await asyncio.sleep(self._retry)
        return rules

    async def rules(self, host: str, sample_url: str) -> RobotsRules:
        """The host's rules as far as one look goes (cached; fetched on a first look)."""
        site = origin(sample_url)
        cached = self._cache.get(site)
        if cached is not None:
            self._cache.move_to_end(site)
            return cached
        rules = await self._load(site) if self._obey else ALLOW_ALL
        self._cache[site] = rules
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        if not rules.unavailable and rules.refused is None:
            self._on_sitemaps(site, rules.sitemaps)  # (a host not crawled has none to read)
        return rules

    async def adopt(self, record: str) -> None:
        """Take a site's rules as another process read them (an `on_fetched` record): its
        robots.txt is not asked for again, and its sitemaps were read already."""
        fetched = json.loads(record)
        site = str(fetched["site"])
        if site in self._cache or not self._obey:
            return
        body = fetched.get("body")
        if body is not None:
            self._cache[site] = await self._rules_of(body.encode())
        else:
            self._cache[site] = RobotsRules(None, self._agent)  # a 3xx or 4xx: allow all

    def forget(self, sample_url: str) -> None:
        """Drop a host's cached rules, so the next `rules()` fetches robots.txt again."""
        self._cache.pop(origin(sample_url), None)

    async def _load(self, site: str) -> RobotsRules:
        result = await self._fetcher.fetch(
            CrawlRequest(url=f"{site}/robots.txt"),
            any_type=True,
            time_limit=self._timeout,
            body_limit=MAX_ROBOTS_BYTES,
        )
        status = result.status or 0
        if result.error_kind in (ErrorKind.BLOCKED, ErrorKind.DNS):
            # The host's address is refused, or its name does not resolve: no request will
            # reach it, so its URLs are recorded so at once (not after rounds of asking).
            return RobotsRules(None, self._agent, refused=result.error, skip_kind=result.error_kind)
        if (
            result.error_kind in (ErrorKind.OUT_OF_SCOPE, ErrorKind.REDIRECTS)
            or 300 <= status < 400
        ):
            # A redirect not followed (outside the scope, too many, or to no crawlable URL):
            # as if there were none (RFC 9309: as a 4xx).
            self._on_fetched(site, json.dumps({"site": site, "status": status}))
            return RobotsRules(None, self._agent)
        if 200 <= status < 300 and result.body is not None:
            text = result.body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
            self._on_fetched(site, json.dumps({"site": site, "status": status, "body": text}))
            return await self._rules_of(result.body)
        if 400 <= status < 500:
            self._on_fetched(site, json.dumps({"site": site, "status": status}))
            return RobotsRules(None, self._agent)
        why = result.error or f"HTTP {status}"
        return RobotsRules(None, self._agent, unavailable=f"robots.txt unavailable: {why}")

    async def _rules_of(self, body: bytes) -> RobotsRules:
        """The rules of a robots.txt answered 2xx."""
        parser = await asyncio.to_thread(_parse, body)  # big files take a while
        delay = parser.crawl_delay(self._agent)
        if delay is not None and delay > self._max_delay:
            refused = (
                f"robots.txt asks for a Crawl-delay of {delay:.3g} s, over "
                f"fetch.max_crawl_delay ({self._max_delay:g} s): host skipped"
            )
            return RobotsRules(None, self._agent, refused=refused)
        return RobotsRules(parser, self._agent, sitemaps=tuple(parser.sitemaps))


def _parse(body: bytes) -> Protego:
    """The rules of a robots.txt's first MAX_ROBOTS_BYTES; a line cut there is left out."""
    if len(body) >= MAX_ROBOTS_BYTES:
        body = body[:MAX_ROBOTS_BYTES].rpartition(b"\n")[0]
    return Protego.parse(body.decode("utf-8", errors="replace"))
