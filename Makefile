# Every target works from a clean clone: the first one that needs the virtualenv builds it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The runtime dependencies alone: all `make demo` and `make run` need (~1/4 of the test venv).
RUNTIME := $(VENV)/.runtime
# The exact versions the tests run on (pip constraints); pyproject.toml keeps the ranges users get.
# `make lock` moves it forward: the newest versions inside the ranges, the suite run against them.
LOCK   := constraints.txt
EXTRAS := test,bench,docs
# The report's test opens it in headless Chromium: Debian's package, installed on first need.
CHROMIUM := /usr/bin/chromium
# The proxies' tests go through a real forward proxy: Debian's tinyproxy, installed on first need.
TINYPROXY := /usr/bin/tinyproxy
SUDO     := $(if $(filter 0,$(shell id -u)),,sudo)
# The PostgreSQL backend's tests start a server of their own from Debian's `postgresql` binaries
# (initdb into a temporary folder): installed on first need, like chromium.
INITDB   := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
ifeq ($(INITDB),)
INITDB   := postgresql-install
endif

.PHONY: postgres install lock run demo test lint docs bench bench-memory bench-scale bench-startup clean \
	postgresql-install

install: $(STAMP)

$(RUNTIME): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) pip
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[$(EXTRAS)]'
	touch $(STAMP)

# The newest versions inside pyproject.toml's ranges, in a virtualenv of their own; the suite runs
# against them, and only when it passes do they become the lock.
LOCK_VENV := .venv-lock
lock: $(CHROMIUM) $(INITDB) $(TINYPROXY)
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade -e '.[$(EXTRAS)]'
	$(LOCK_VENV)/bin/python -m pytest $(PYTEST_ARGS)
	{ echo "# The versions make install and make test install; written by make lock."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

# A site built for scraping practice, 200 pages of it: the one public site anything here names.
run: $(RUNTIME)
	$(BIN)/scraper crawl https://books.toscrape.com/ --max-pages 200 --config config.toml

demo: $(RUNTIME)
	$(BIN)/scraper demo

# Three pytest-xdist workers: most of a test's time is spent waiting on its servers and processes
# (the suite used 2.7 CPU minutes in 6 wall minutes, one at a time), so three keep 2 cores busy
# without starving the tests that time their processes; tests/conftest.py keeps those together.
PYTEST_ARGS := -n 3 --dist loadgroup
# pywb, which replays a crawl's WARC files, for the archive's replay test: in a virtualenv of
# its own (its pins and its brotlipy would clash with ours), at the versions of its lock.
REPLAY_VENV := .venv-replay
REPLAY      := $(REPLAY_VENV)/.installed
test: $(STAMP) $(CHROMIUM) $(INITDB) $(REPLAY) $(TINYPROXY)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(REPLAY): constraints-replay.txt
	$(PYTHON) -m venv $(REPLAY_VENV)
	$(REPLAY_VENV)/bin/python -m pip install --quiet --constraint constraints-replay.txt pywb
	touch $(REPLAY)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(TINYPROXY):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tinyproxy

# A throw-away PostgreSQL server on 127.0.0.1 for trying `scraper crawl --workers N`: prints its
# URL, runs until Ctrl-C, then deletes its data. (The tests start their own the same way.)
postgres: $(STAMP) $(INITDB)
	$(BIN)/python -m tests.pgserver

postgresql-install:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql

# The full benchmark (~7 min on 2 cores). Quicker: make bench BENCH_ARGS="--pages 2000 --heavy-pages 100 --rounds 1".
# nginx serves the site, with its Lua module for the added latency: installed here if missing (as
# root, with apt-get); without them the aiohttp server stands in.
BENCH_ARGS ?=
NGINX_LUA  := /usr/share/nginx/modules/ngx_http_lua_module.so
bench: $(STAMP)
	@test -x /usr/sbin/nginx -a -e $(NGINX_LUA) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "bench: installing nginx and its Lua module with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      nginx libnginx-mod-http-lua >/dev/null \
	    || echo "bench: could not install nginx; the aiohttp server stands in"; \
	  else echo "bench: nginx or its Lua module missing; the aiohttp server stands in"; fi; }
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check scraper bench tests
	$(BIN)/ruff format --check scraper bench tests
	$(BIN)/mypy

# The manual, docs/ built into site/ (open site/index.html); warnings are errors.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(LOCK_VENV) $(REPLAY_VENV) *.egg-info .pytest_cache site

# Peak RSS against URLs discovered (the frontier lives on disk): ~2 minutes.
bench-memory: $(STAMP)
	$(BIN)/python -m bench.frontier_memory

# One crawl on 1, 2 and 4 processes on PostgreSQL against SQLite's one (~6 min): a latency-bound
# site of 40 hosts, then the cpu case. PostgreSQL is installed if missing, as for `make test`.
SCALE_ARGS ?=
bench-scale: $(STAMP) $(INITDB)
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

# From `scraper crawl URL` to the server's first request, median of 15 rounds (~30 s); fails
# over the 250 ms budget. STARTUP_ARGS="--rounds 5 --budget 0.3".
STARTUP_ARGS ?=
bench-startup: $(STAMP)
	$(BIN)/python -m bench.startup $(STARTUP_ARGS)
