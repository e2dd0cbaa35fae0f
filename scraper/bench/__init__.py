"""`scraper bench`: our crawler side by side with Scrapy and a bare aiohttp loop, on one local site.

    site.py      the demo site written to disk (same link graph as scraper.demosite), cached
    server.py    serves it: nginx (a private config in a temp dir), or an aiohttp fallback
    rusage.py    runs one crawler and reports the CPU time of its whole process tree
    measure.py   one crawler run: wall time, CPU, peak RSS; did it store every page once?
    bare.py      the floor: a bare aiohttp + selectolax crawl loop of a few dozen lines
    scrapy_crawl.py  the same crawl as a Scrapy spider (needs the `bench` extra)
    harness.py   the cases, the table and the ratios (`scraper bench`, `python -m scraper.bench`)

Nothing here is imported by the crawler itself.
"""
