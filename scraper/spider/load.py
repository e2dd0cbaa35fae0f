"""Finding a spider class: from what a user writes (`shop.py:Shop`, `shop.spiders:Shop`), or
from the class itself (the library), as a `SpiderRef` a worker process can load it by.

The crawl's process imports the spider to read its `settings`, `start_urls` and
`allowed_domains`; each parse worker imports it once, on its first page (`instance`). A spider
in a Python file is loaded under a module name of its own, not `__main__`, so a script that
crawls from its `if __name__ == "__main__":` block does not crawl again in each worker.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from scraper.errors import ConfigError
from scraper.models import SpiderRef
from scraper.spider.api import Spider

_USAGE = "give FILE.py:Class or module.path:Class"


def find_spider(spec: str, *, cwd: str | None = None) -> tuple[type[Spider], SpiderRef]:
    """The class `spec` names, imported here, and how a worker finds it. ConfigError (one
    line) for a spec that names nothing, a file that does not import, or a class that is not a
    `scraper.Spider`."""
    where, colon, name = spec.rpartition(":")
    if not colon or not where or not name.isidentifier():
        raise ConfigError(f"spider {spec!r}: {_USAGE}")
    cwd = cwd or os.getcwd()
    if where.endswith(".py") or os.sep in where:
        file = str(Path(cwd, where).resolve())
        if not Path(file).is_file():
            raise ConfigError(f"spider {spec!r}: no such file {file}")
        ref = SpiderRef(module=None, file=file, path=None, name=name, digest=_digest(file))
    else:
        ref = _module_ref(spec, where, name, cwd)
    try:
        cls = load_class(ref)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"spider {spec!r}: importing it raised {_one_line(exc)}") from exc
    return cls, ref


def ref_of(cls: type[Spider]) -> SpiderRef:
    """How a worker finds a class given to the library (`scraper.Crawl(spider=Shop)`): by its
    module, or for a script's (`__main__`), by the script's file."""
    if not (isinstance(cls, type) and issubclass(cls, Spider)):
        raise ConfigError(f"spider {cls!r}: not a subclass of scraper.Spider")
    if "<locals>" in cls.__qualname__ or "." in cls.__qualname__:
        raise ConfigError(
            f"spider {cls.__qualname__}: define the class at the top level of a module, so the "
            "parse worker processes can import it"
        )
    module = sys.modules.get(cls.__module__)
    file = inspect.getsourcefile(module) if module is not None else None
    if file is None:
        raise ConfigError(f"spider {cls.__qualname__}: its module has no source file to load")
    file = str(Path(file).resolve())
    if cls.__module__ == "__main__" or module is None or module.__spec__ is None:
        return SpiderRef(module=None, file=file, path=None, name=cls.__name__, digest=_digest(file))
    return SpiderRef(
        module=cls.__module__, file=None, path=os.getcwd(), name=cls.__name__, digest=_digest(file)
    )


def load_class(ref: SpiderRef) -> type[Spider]:
    """The class `ref` names, its module imported (once per process)."""
    module = _import(ref)
    cls = getattr(module, ref.name, None)
    if cls is None:
        raise ConfigError(f"spider {ref.spec!r}: no class {ref.name} in it")
    if not (isinstance(cls, type) and issubclass(cls, Spider)):
        raise ConfigError(f"spider {ref.spec!r}: {ref.name} is not a subclass of scraper.Spider")
    return cls


def _import(ref: SpiderRef) -> ModuleType:
    if ref.module is not None:
        if ref.path and ref.path not in sys.path:
            sys.path.insert(0, ref.path)
        return importlib.import_module(ref.module)
    assert ref.file is not None
    name = f"scraper_spider_{hashlib.sha256(ref.file.encode()).hexdigest()[:16]}"
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(name, ref.file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"spider {ref.spec!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses and pickling look a class's module up there)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _module_ref(spec: str, module: str, name: str, cwd: str) -> SpiderRef:
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` would: a module of the working directory
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"spider {spec!r}: {_one_line(exc)}") from exc
    if found is None or found.origin is None or not Path(found.origin).is_file():
        raise ConfigError(f"spider {spec!r}: no module {module} ({_USAGE})")
    return SpiderRef(module=module, file=None, path=cwd, name=name, digest=_digest(found.origin))


def _digest(file: str) -> str:
    """What every process on one crawl must share: the digest of the spider's source file."""
    try:
        return "sha256:" + hashlib.sha256(Path(file).read_bytes()).hexdigest()
    except OSError as exc:
        raise ConfigError(f"spider {file}: cannot read: {exc.strerror}") from exc


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type and its message's last line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def spider_settings(cls: type[Spider], spec: str | None) -> dict[str, Any]:
    """The config values a spider class sets ("section.key" → value), for the layer between
    config.toml and --set: its `settings`, its `start_urls` (as crawl.seeds) and
    `allowed_domains` (crawl.allowed_domains) when not empty, and crawl.spider (`spec`)."""
    values: dict[str, Any] = {}
    settings = cls.settings
    if not isinstance(settings, Mapping):
        raise ConfigError(f"spider {cls.__name__}.settings: must be a dict of config keys")
    for key, value in settings.items():
        if not isinstance(key, str) or key.count(".") != 1:
            raise ConfigError(
                f"spider {cls.__name__}.settings: {key!r}: expected a config key, "
                'section.key (e.g. "fetch.per_host_delay")'
            )
        values[key] = value
    as_keys = (("start_urls", "crawl.seeds"), ("allowed_domains", "crawl.allowed_domains"))
    for attribute, key in as_keys:
        given = getattr(cls, attribute)
        if isinstance(given, str):
            raise ConfigError(f"spider {cls.__name__}.{attribute}: a list of strings, not one")
        if given:
            values[key] = list(given)
    if spec is not None:
        values["crawl.spider"] = spec
    return values
