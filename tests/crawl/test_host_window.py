"""The host window alone: claims in batches, hosts taken while there is room, draining over the
fair share. Over SQLite's host leases (one process's, in memory) and a table of pending hosts."""

from __future__ import annotations

from scraper.crawl.host_window import HostWindow
from scraper.crawl.hosts import HostState, HostTable, Limits
from scraper.models import CrawlRequest
from scraper.store.sqlite.leases import SqliteHostLeases


class PendingHosts:
    """The frontier as the leases and the window see it: hosts with pending URLs, in order."""

    def __init__(self, hosts: list[str], *, spent: bool = False) -> None:
        self.hosts = sorted(hosts)
        self.spent = spent

    def capped(self, host: str) -> bool:
        return False

    def forget(self, host: str) -> None:
        pass

    async def pending_hosts(self, limit: int, after: str = "") -> list[str]:
        return [host for host in self.hosts if host > after][:limit]


def window_over(
    frontier: PendingHosts, size: int, concurrency: int = 1
) -> tuple[HostWindow, HostTable]:
    """A window of `size` hosts over `frontier`; each host's slot takes one request at a time."""
    table = HostTable(Limits(per_host_concurrency=1))
    leases = SqliteHostLeases(frontier)
    return HostWindow(table, leases, frontier, size=size, concurrency=concurrency), table


def hold(table: HostTable, name: str) -> HostState:
    host, _ = table.hold(name)
    table.join(host, name)
    host.queue.append(CrawlRequest(f"http://{name}/"))
    return host


async def test_a_claim_that_comes_back_full_says_more_may_be_found() -> None:
    window, _ = window_over(PendingHosts([f"h{n}" for n in range(5)]), size=10)
    assert len(await window.claim(3)) == 3 and window.more  # full: more may be left
    assert len(await window.claim(3)) == 2 and not window.more  # fewer: none left now
    assert await window.claim(0) == [] and not window.more


async def test_a_batch_is_due_only_with_a_tenth_of_the_window_free_and_none_running() -> None:
    window, table = window_over(PendingHosts([f"h{n}" for n in range(40)]), size=20)
    for n in range(19):
        hold(table, f"held{n:02}")
    window.more = True
    assert window.batch_due() == 0  # one free of twenty: under a tenth
    for name in ("held00", "held01"):
        host = table.get(name)
        assert host is not None
        host.queue.clear()
        table.release_if_idle(host, 0.0)
    assert len(table) == 17
    room = window.batch_due()
    assert room == 3
    assert window.batch_due() == 0  # one claim at a time
    assert len(await window.claim_batch(room)) == 3
    assert window.batch_due() == 3  # (the claimed hosts were not taken on here)


async def test_a_host_found_is_taken_while_there_is_room_else_it_waits_for_a_claim() -> None:
    window, table = window_over(PendingHosts(["a", "b"]), size=1)
    assert window.may_take("a") and not window.more
    assert not window.may_take("a")  # ours already
    hold(table, "a")
    assert not window.may_take("b") and window.more  # no room: a claim will find it


async def test_nothing_is_wanted_nor_claimed_once_the_page_budget_is_spent() -> None:
    window, table = window_over(PendingHosts(["a"]), size=3)
    hold(table, "a")
    assert window.wanted() == 2
    spent, _ = window_over(PendingHosts(["a"], spent=True), size=3)
    spent.more = True
    assert spent.wanted() == 0 and spent.batch_due() == 0


async def test_hosts_over_the_fair_share_drain_while_the_rest_fill_the_slots() -> None:
    """Four hosts of one slot each, two fetch slots: two may go back, those with the least in
    hand first; each drains until it is released."""
    window, table = window_over(PendingHosts([]), size=10, concurrency=2)
    in_hand = {"a": 3, "b": 0, "c": 1, "d": 2}
    for name in in_hand:
        hold(table, name)
    assert window.held == 4
    chosen = window.drain(3, lambda host: in_hand[host.name])
    assert [host.name for host in chosen] == ["b", "c"]  # two left fill the two slots
    assert window.draining == {"b", "c"} and window.held == 2
    assert window.drain(1, lambda host: in_hand[host.name]) == []  # no more may go
    window.more = True
    assert window.released("b") and window.draining == {"c"}
