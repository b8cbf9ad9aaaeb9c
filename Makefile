# Every target bootstraps its virtual environment from pyproject.toml, so a fresh clone needs only
# Python >= 3.11 and make.
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
EXTRAS  ?= dev,cli,docs
# The interpreters `make test` runs the suite on, each in its own .venv-<version>.
PYTHONS ?= 3.11 3.12 3.13

.PHONY: test test-one lint typecheck docs pytest pytest-all demo bench bench-quick clean venv \
	redis-server nginx

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check freedompay_async tests benchmarks docs

typecheck: $(STAMP)
	$(BIN)/mypy --strict freedompay_async
	$(BIN)/mypy --strict tests/typing

# The documentation site (mkdocs, Material, mkdocstrings); --strict turns every warning (a broken
# link or reference, a public name without a docstring or missing from the API reference) into a
# failure. Nothing is fetched from the network while building.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The Redis-backed tests need a real redis-server (Debian package); install it when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing redis-server (apt-get) for the Redis-backed tests"; \
	  ( $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server ) \
	  || echo "redis-server could not be installed: the Redis-backed tests will be skipped"; }

# The reverse-proxy tests need a real nginx (Debian's nginx-light); install it when missing.
nginx:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing nginx-light (apt-get) for the reverse-proxy tests"; \
	  ( $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light ) \
	  || echo "nginx could not be installed: the reverse-proxy tests will be skipped"; }

# The whole suite on one interpreter: `make pytest` (PYTHON, VENV), e.g.
# `make pytest PYTHON=python3.13 VENV=.venv-3.13 EXTRAS=dev,cli`.
pytest: $(STAMP) redis-server nginx
	$(BIN)/pytest --cov=freedompay_async --cov-branch --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

# The whole suite on every interpreter of PYTHONS (a missing one is reported loudly; none fails).
pytest-all: redis-server nginx
	bash .ci/each-python $(PYTHONS)

# ruff, mypy and the docs once; pytest on each of PYTHONS. `make test-one` is the quick local loop.
test: lint typecheck docs pytest-all

test-one: lint typecheck pytest

# The demo needs only the `cli` extra (rich), in its own small environment.
demo:
	@$(MAKE) --no-print-directory VENV=.venv-demo EXTRAS=cli venv
	.venv-demo/bin/python -m freedompay_async demo --invoices 2000

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) .venv-* site .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov dist build
