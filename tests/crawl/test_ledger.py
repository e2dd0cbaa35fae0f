"""The dispatcher's ledger: queued, handed out, unstarted, unstored, and when nothing is."""

from __future__ import annotations

from scraper.crawl.ledger import Ledger


def test_a_page_is_on_its_way_until_it_is_started_and_stored() -> None:
    ledger = Ledger()
    ledger.queued += 1
    assert not ledger.settled
    ledger.unstarted_request("http://a/1")
    ledger.handed_out("http://a/1", "a")
    assert (ledger.queued, ledger.unstored, ledger.handed, ledger.unstarted) == (0, 1, 1, 1)
    assert ledger.unstored_of("a") == 1 and list(ledger.hosts_unstored()) == ["a"]
    ledger.started("http://a/1")
    assert ledger.unstarted == 0 and not ledger.settled
    assert ledger.stored(["http://a/1"]) == ["a"]
    assert ledger.settled and ledger.unstored_of("a") == 0 and not list(ledger.hosts_unstored())
    assert ledger.handed == 1


def test_a_host_is_done_only_once_each_of_its_pages_is_stored() -> None:
    ledger = Ledger()
    ledger.queued += 3
    for url, host in [("http://a/1", "a"), ("http://a/2", "a"), ("http://b/1", "b")]:
        ledger.handed_out(url, host)
    assert ledger.stored(["http://a/1", "http://b/1"]) == ["b"]
    assert ledger.unstored_of("a") == 1 and ledger.unstored == 1
    assert ledger.stored(["http://a/2"]) == ["a"]
    assert ledger.settled


def test_a_record_no_request_led_to_is_counted_until_stored() -> None:
    ledger = Ledger()
    ledger.expect_record()
    assert not ledger.settled
    assert ledger.stored(["http://a/sitemap-row"]) == []  # no host's page
    assert ledger.settled and ledger.handed == 0


def test_a_url_handed_out_twice_is_unstarted_until_both_start() -> None:
    """robots.txt as a job and as a page, say: each start forgets one; a start of what was never
    handed out (a Fetcher's own request) forgets nothing."""
    ledger = Ledger()
    ledger.unstarted_request("http://a/robots.txt")
    ledger.unstarted_request("http://a/robots.txt")
    ledger.started("http://a/robots.txt")
    assert ledger.unstarted == 1 and not ledger.settled
    ledger.started("http://a/other")
    assert ledger.unstarted == 1
    ledger.started("http://a/robots.txt")
    ledger.started("http://a/robots.txt")  # (done after its start: nothing left to forget)
    assert ledger.unstarted == 0 and ledger.settled
