# The two commands of the README: `make serve` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Two makes started together (`make serve` and `make test` on a fresh clone) set the
# venv up one at a time: the whole set-up (the venv, pip's upgrade, the install) holds
# $(LOCK), and the second make says it waits, waits, then finds the set-up done. flock
# is in util-linux (Debian; `brew install flock` on macOS); without it (or with
# `make FLOCK=`) make warns that the set-up runs unlocked.
FLOCK  ?= $(shell command -v flock 2>/dev/null)
LOCK   := $(VENV)/.lock
BUSY   := 75
SETUP  := sh -c '\
  if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then \
    echo "make: $(VENV) is ready"; exit 0; fi; \
  echo "make: setting up $(VENV): pip installs signoff and its test tools (the first time: a minute or two)" \
  && { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); } \
  && echo "make: upgrading pip in $(VENV)" \
  && $(BIN)/python -m pip install --quiet --upgrade pip \
  && echo "make: installing signoff and its test tools into $(VENV) (pip lists each package)" \
  && $(BIN)/python -m pip install --progress-bar off -e ".[test]" \
  && touch $(STAMP) \
  && echo "make: $(VENV) is ready"'

.PHONY: serve test lint clean

$(STAMP): pyproject.toml
	@mkdir -p $(VENV)
ifeq ($(strip $(FLOCK)),)
	@echo "make: warning: flock (util-linux) not found, so $(VENV) is set up unlocked:" \
	      "start no other make in this clone until this one says $(VENV) is ready" >&2
	@$(SETUP)
else
	@$(FLOCK) -n -E $(BUSY) $(LOCK) $(SETUP); rc=$$?; \
	if [ $$rc -eq $(BUSY) ]; then \
	  echo "make: another make is setting $(VENV) up; waiting for it to finish"; \
	  $(FLOCK) $(LOCK) $(SETUP); \
	else exit $$rc; fi
endif

serve: $(STAMP)  ## run the service on SQLite with the demo agents and the offline model
	$(BIN)/signoff serve

test: $(STAMP)  ## run the whole test suite (starts its own PostgreSQL), a worker per core
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
