# The two commands of the README: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: run test

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(INSTALLED)

# Serves on http://localhost:8000: DATABASE_URL if set, else the embedded PostgreSQL with a demo catalog.
run: $(INSTALLED)
	$(VENV)/bin/catalog run

# Each run creates its own database (on DATABASE_URL's / TEST_DATABASE_URL's server, else the embedded one).
test: $(INSTALLED)
	$(VENV)/bin/python -m pytest
