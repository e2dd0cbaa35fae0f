"""The process's own resources: the open-files limit raised at start, and a socket budget that
fits under it (run in subprocesses: the limits are the process's)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from scraper.crawl.sockets import RESERVE, socket_budget


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    script = textwrap.dedent(
        """
        import resource
        from scraper.crawl.sockets import raise_open_files_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        print(raise_open_files_limit() == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


def test_the_socket_budget_fits_under_the_limit(caplog) -> None:
    roomy = socket_budget(concurrency=100, parse_workers=2, open_files=1024)
    assert (roomy.wire, roomy.idle) == (100, 100)
    tight = socket_budget(concurrency=100, parse_workers=2, open_files=RESERVE + 8 + 150)
    assert (tight.wire, tight.idle) == (100, 50)
    tiny = socket_budget(concurrency=100, parse_workers=2, open_files=RESERVE + 8 + 40)
    assert (tiny.wire, tiny.idle) == (40, 0)
    assert "allows 40 requests on the wire, not fetch.concurrency = 100" in caplog.text
