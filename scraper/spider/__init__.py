"""Spiders: the user's own Python, run in the parse workers (see docs/guides/spiders.md).

api.py    `Spider` and `Request`, the public names a spider is written with
page.py   `Page` and `Node`, what a callback reads
load.py   finding a spider class (`shop.py:Shop`, `module:Shop`, or the class) for a worker
call.py   calling a callback on a page in a worker: items and requests as data
"""
