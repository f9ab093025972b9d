# shoal: set-up, build, test and demo.
#
#   make demo    install everything, start a local 3-node cluster, run the demo, print where to connect
#   make test    install everything, lint, run the whole test suite (what .ci/run calls)
#   make bench   install everything, run the benchmarks (quick sizes), write bench/results/
#
# Both work on a fresh Debian 12 machine, as root or as a sudo-capable user, and are fast when repeated:
# apt packages, the Python environment and the shoal package are only (re)installed when needed.

SHELL := /bin/bash
.DEFAULT_GOAL := install

PG_MAJOR   := 15
PG_BIN     ?= /usr/lib/postgresql/$(PG_MAJOR)/bin
PG_CONFIG  ?= $(PG_BIN)/pg_config
# The extension embeds Debian's CPython 3.11, so the Python environment must be built on that very
# interpreter, in a world-readable place: the servers run as an unprivileged user (see shoal/osuser.py).
PYTHON     ?= /usr/bin/python3.11
VENV       ?= /opt/shoal/venv
BIN_LINK   ?= /usr/local/bin/shoal

# Empty when we are root; otherwise installing things needs sudo.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# contrib (file_fdw, used by bench/) is part of postgresql-15 on Debian 12: there is no separate package.
APT_PACKAGES := postgresql-$(PG_MAJOR) postgresql-server-dev-$(PG_MAJOR) libpython3.11-dev \
                python3.11-venv gcc make rsync
PIP_PACKAGES := "psycopg[binary]" pyzmq msgpack pglast pytest testgres ruff matplotlib

PY_SOURCES := $(shell find shoal planner multiplexer -name '*.py' 2>/dev/null) pyproject.toml README.md
DEPS_STAMP := $(VENV)/.shoal-deps
# One stamp per clone: when another clone installs shoal into the same venv it removes ours, so the
# next `make` here installs this clone's code again.
SHOAL_STAMP := $(VENV)/.shoal-installed-$(shell echo '$(CURDIR)' | md5sum | cut -c1-12)

# Extra arguments for pytest, e.g. make test PYTEST_ARGS='-k cli -x'
PYTEST_ARGS ?=

# The demo cluster. As root, PostgreSQL runs as an unprivileged user who cannot enter a clone under
# /root (mode 0700), so the cluster lives under /var/lib/shoal; a normal user runs the servers as
# themself and can keep the contract's default, ./shoal-cluster.
DEMO_DIR ?= $(if $(SUDO),$(CURDIR)/shoal-cluster,/var/lib/shoal/demo)

.PHONY: all deps venv extension install test lint demo bench clean distclean

all: install

## deps: Debian packages, installed only when missing (never prompts: CI has no stdin)
deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg -s "$$p" 2>/dev/null | grep -q '^Status: .* ok installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

## venv: the Python environment at $(VENV), with shoal itself installed (not editable: the clone may
## live where the servers' user cannot read it)
venv: $(SHOAL_STAMP)

$(VENV)/bin/python: | deps
	@echo "==> creating $(VENV)"
	$(SUDO) mkdir -p $(dir $(VENV))
	$(SUDO) $(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): $(VENV)/bin/python Makefile
	@echo "==> installing Python packages into $(VENV)"
	$(SUDO) $(VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(SUDO) $(VENV)/bin/pip install --quiet $(PIP_PACKAGES)
	$(SUDO) touch $@

$(SHOAL_STAMP): $(DEPS_STAMP) $(PY_SOURCES)
	@echo "==> installing shoal into $(VENV)"
	@# build/ would keep modules deleted from the sources and install them again: start clean.
	$(SUDO) rm -rf build shoal.egg-info
	$(SUDO) $(VENV)/bin/pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	$(SUDO) rm -rf build shoal.egg-info
	$(SUDO) chmod -R a+rX $(dir $(VENV))
	$(SUDO) rm -f $(VENV)/.shoal-installed-*
	$(SUDO) touch $@

## extension: build the C extension and install it into PostgreSQL $(PG_MAJOR)
extension: deps
	$(MAKE) -C extension PG_CONFIG=$(PG_CONFIG)
	$(SUDO) $(MAKE) -C extension PG_CONFIG=$(PG_CONFIG) install

## install: everything, and the `shoal` command on PATH
install: deps venv extension
	@[ "$$(readlink $(BIN_LINK))" = "$(VENV)/bin/shoal" ] || $(SUDO) ln -sfn $(VENV)/bin/shoal $(BIN_LINK)

## lint: ruff over all Python sources (no cache: the clone may not be ours to write into)
lint: venv
	$(VENV)/bin/ruff check --no-cache .

## test: lint, then the whole pytest suite as the unprivileged user that runs PostgreSQL servers.
## The tests are staged into a fresh world-readable directory because that user may not be able to read
## the clone (e.g. under /root), and so that `import shoal` finds the installed package rather than the
## source tree. pytest's exit code is make's.
test: install lint
	@set -e; \
	user=$$($(VENV)/bin/python -m shoal.osuser); \
	stage=$$(mktemp -d /tmp/shoal-test-XXXXXX); \
	trap 'rm -rf "$$stage"' EXIT; \
	rsync -a --exclude __pycache__ --exclude '*.pyc' tests pyproject.toml "$$stage"/; \
	for d in bench sql; do [ ! -d "$$d" ] || rsync -a --exclude __pycache__ "$$d" "$$stage"/; done; \
	chmod 755 "$$stage"; \
	as_user=""; \
	if [ "$$(id -u)" = 0 ]; then chown -R "$$user": "$$stage"; as_user="runuser -u $$user --"; fi; \
	echo "==> pytest as OS user $$user in $$stage"; \
	cd "$$stage"; \
	set +e; \
	$$as_user env HOME="$$stage" PG_BIN=$(PG_BIN) PYTHONDONTWRITEBYTECODE=1 \
	  $(VENV)/bin/python -m pytest $(PYTEST_ARGS); \
	rc=$$?; \
	exit $$rc

## demo: a local 3-node cluster in $(DEMO_DIR), the demo SQL, and where to connect. Safe to repeat.
## sql/demo.sql (when present) runs once, on the first node; sql/demo-query.sql (when present) runs on
## every node; without it each node shows who it is and which nodes it knows.
demo: install
	@set -e; \
	conninfos=$$($(VENV)/bin/shoal up --dir $(DEMO_DIR)); \
	first=$$(head -n1 <<<"$$conninfos"); \
	psql="$(PG_BIN)/psql -X -v ON_ERROR_STOP=1"; \
	if [ -f sql/demo.sql ]; then \
	  echo "==> sql/demo.sql on $$first"; \
	  $$psql "$$first" -f sql/demo.sql; \
	fi; \
	while IFS= read -r c; do \
	  echo "==> queries on $$c"; \
	  if [ -f sql/demo-query.sql ]; then \
	    $$psql "$$c" -f sql/demo-query.sql </dev/null; \
	  else \
	    $$psql "$$c" </dev/null \
	      -c "SELECT current_setting('cluster_name') AS node, current_setting('port') AS port, \
	                 (SELECT extversion FROM pg_extension WHERE extname = 'shoal') AS shoal, \
	                 current_setting('server_version') AS postgres" \
	      -c "SELECT name, conninfo FROM shoal.nodes"; \
	  fi; \
	done <<<"$$conninfos"; \
	echo; \
	$(VENV)/bin/shoal status --dir $(DEMO_DIR); \
	echo; \
	echo "Connect with psql to any node:"; \
	while IFS= read -r c; do echo "  psql \"$$c\""; done <<<"$$conninfos"; \
	echo "Stop with: shoal down --dir $(DEMO_DIR)    Delete with: shoal destroy --dir $(DEMO_DIR)"

## bench: pgbench and TPROC-C on plain PostgreSQL, postgres_fdw and shoal side by side, and the transport
## benchmark, with quick sizes (minutes); JSON, Markdown and PNG plots in bench/results/. Servers run as the
## unprivileged user when we are root (bench/systems.py, like `shoal up`), in directories under /tmp.
## More: make bench BENCH_ARGS='pgbench --clients 1,8' or python -m bench.run --help.
BENCH_ARGS ?= all --quick
bench: install
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

## clean: build artefacts in the clone (the installed venv and extension stay; see distclean)
clean:
	rm -rf build shoal.egg-info .ruff_cache .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	[ ! -f extension/Makefile ] || $(MAKE) -C extension PG_CONFIG=$(PG_CONFIG) clean

## distclean: clean, and remove the Python environment and the `shoal` link
distclean: clean
	$(SUDO) rm -rf $(VENV)
	[ ! -L $(BIN_LINK) ] || $(SUDO) rm -f $(BIN_LINK)
