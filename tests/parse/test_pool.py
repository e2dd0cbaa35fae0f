"""ParsePool: the parse stage's handle on the loop. With workers it is tested through crawls
(tests/test_crawl.py) and its pool (tests/test_procpool.py); here, inline."""

from scraper.config import ParseConfig
from scraper.models import ParseJob
from scraper.parse.page import parse_pages
from scraper.parse.pool import ParsePool

URL = "http://example.com/dir/page.html"


async def test_no_workers_means_no_pool_and_the_same_results() -> None:
    job = ParseJob(url=URL, body=b"<title>t</title><a href=x>x</a>", content_type="text/html")
    async with ParsePool(ParseConfig(workers=0)) as pool:
        assert pool.inline and pool._pool is None  # no process was started
        assert await pool.parse_many([job, job]) == parse_pages([job, job])
        assert await pool.run(len, [1, 2]) == 2
