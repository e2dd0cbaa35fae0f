"""The dispatcher's ledger: where each request it took from the frontier is, so the crawl ends by
exact accounting, never by a timeout.

A request leased from the frontier is **queued** (in memory, not yet handed out); handed out, it
is **unstored** until the sink commits its page, and **unstarted** until the fetch stage puts it
on the wire (robots.txt and sitemaps, handed out as jobs, are counted unstarted too). A record no
request led to (a sitemap's row) is unstored from the moment it is expected. The crawl is not
over while anything is queued, unstarted or unstored (`settled`), and a host is not handed back
while a page of it is unstored (`unstored_of`): its links may be the host's next work.

"In flight" is something else: a request on the wire, the fetch stage's count.
"""

from __future__ import annotations

from collections.abc import Iterator


class Ledger:
    """Counts of the requests the dispatcher holds, by stage; plain bookkeeping, no clock."""

    __slots__ = ("_of_host", "_unstarted", "_unstored", "handed", "queued", "unstarted", "unstored")

    def __init__(self) -> None:
        self.queued = 0  # leased into memory, not yet handed out
        self.unstored = 0  # handed out (or a record expected) and not yet stored
        self.handed = 0  # handed out since the start
        self.unstarted = 0  # handed out and not yet on the wire
        self._unstarted: dict[str, int] = {}  # the same, by URL (a URL may be twice: a job)
        self._unstored: dict[str, str] = {}  # handed-out pages not yet stored: URL → host
        self._of_host: dict[str, int] = {}  # the same, counted by host

    def handed_out(self, url: str, host: str) -> None:
        """A queued page was handed to a worker: unstored until the sink commits it."""
        self.queued -= 1
        self.unstored += 1
        self.handed += 1
        self._unstored[url] = host
        self._of_host[host] = self._of_host.get(host, 0) + 1

    def expect_record(self) -> None:
        """A record that no request led to is on its way to the sink."""
        self.unstored += 1

    def stored(self, urls: list[str]) -> list[str]:
        """The sink committed the pages of `urls` (and as many records): the hosts left with
        no page unstored by it."""
        self.unstored -= len(urls)
        done: list[str] = []
        for url in urls:
            host = self._unstored.pop(url, None)
            if host is None:
                continue  # (a sitemap's record)
            left = self._of_host.get(host, 1) - 1
            if left > 0:
                self._of_host[host] = left
            else:
                self._of_host.pop(host, None)
                done.append(host)
        return done

    def unstored_of(self, host: str) -> int:
        """Pages of `host` handed out and not yet stored."""
        return self._of_host.get(host, 0)

    def hosts_unstored(self) -> Iterator[str]:
        """The hosts with a page handed out and not yet stored (as many as the pages between
        the dispatcher and the sink, at most: never every host)."""
        return iter(self._of_host)

    def unstarted_request(self, url: str) -> None:
        """A request (a page, or a job's) was handed out: unstarted until it goes on the wire."""
        self._unstarted[url] = self._unstarted.get(url, 0) + 1
        self.unstarted += 1

    def started(self, url: str) -> None:
        """The request of `url` went on the wire, or never will (it is done): no more unstarted.
        Nothing if it was not."""
        count = self._unstarted.get(url)
        if count:
            self.unstarted -= 1
            if count == 1:
                del self._unstarted[url]
            else:
                self._unstarted[url] = count - 1

    @property
    def settled(self) -> bool:
        """Nothing queued, unstarted or unstored: no request of the crawl is on its way."""
        return not (self.unstored or self.queued or self.unstarted)
