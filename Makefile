# Every target bootstraps .venv from pyproject.toml, so a fresh clone needs only Python >= 3.11 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= dev,cli

.PHONY: test lint typecheck pytest demo bench bench-quick clean venv redis-server nginx

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check freedompay_async tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy --strict freedompay_async
	$(BIN)/mypy --strict tests/typing

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

pytest: $(STAMP) redis-server nginx
	$(BIN)/pytest --cov=freedompay_async --cov-branch --cov-report=term --cov-fail-under=90 $(PYTEST_ARGS)

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/python -m freedompay_async demo --invoices 2000

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov dist build
