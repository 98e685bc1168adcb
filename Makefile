# watchkeeper — `make run` starts the daemon locally, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= examples/local.yaml
TEST_WORKERS ?= 2
# Debian packages the integration tests start (Prometheus, Alertmanager, kcat, Chromium,
# Mosquitto, PostgreSQL server binaries for private instances, openssl for test certificates).
SYSTEM_PACKAGES = prometheus prometheus-alertmanager kcat chromium mosquitto mosquitto-clients postgresql sqlite3 openssl openssh-server openssh-client sudo

.PHONY: run test lint demo system-deps clean bench

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/watchkeeper run --config $(CONFIG)

demo: $(VENV)/.installed
	$(BIN)/watchkeeper demo

# Installs missing system packages when run as root (CI and fresh machines), then the suite.
system-deps:
	@missing=""; \
	for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages (tests needing them will be skipped):$$missing"; \
	  fi; \
	fi

test: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check daemon handlers tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/watchkeeper runbooks validate

bench: $(VENV)/.installed-test
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/kafka_ingest.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
