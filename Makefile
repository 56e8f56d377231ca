# The two commands of the README: `make serve` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two makes started together (`make serve` and `make test` on a fresh clone) set the
# venv up one at a time: the second waits for the lock, then finds it done. flock is in
# util-linux (Debian); without it the install runs unlocked.
LOCK   := $(shell command -v flock >/dev/null 2>&1 && echo "flock $(VENV)/.lock")

.PHONY: serve test lint clean

$(STAMP): pyproject.toml
	@echo "make: setting up $(VENV): pip installs signoff and its test tools (the first time: a minute or two)"
	@mkdir -p $(VENV)
	@$(LOCK) sh -c '\
	  if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then exit 0; fi; \
	  { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } \
	  && $(BIN)/python -m pip install --quiet --upgrade pip \
	  && $(BIN)/python -m pip install --progress-bar off -e ".[test]" \
	  && touch $(STAMP) \
	  && echo "make: $(VENV) is ready"'

serve: $(STAMP)  ## run the service on SQLite with the demo agents and the offline model
	$(BIN)/signoff serve

test: $(STAMP)  ## run the whole test suite (starts its own PostgreSQL), a worker per core
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
