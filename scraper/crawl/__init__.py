"""The write side: the crawl's stages and the coordinator that wires them (docs/architecture.md).

`scraper.crawl` is also a public name of the library: `scraper.crawl(seeds, spider=...)`, a
sync crawl for scripts (scraper/library.py). Python binds a package's submodule to the package's
attribute of the same name once it is imported, so this package is what `scraper.crawl` names as
soon as any crawl module is loaded: calling it calls the library's function.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from scraper.library import crawl

        return crawl(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
