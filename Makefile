# The two commands of the README: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: run test requirements

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[embedded,test]'
	touch $(INSTALLED)

# Serves on http://localhost:8000: DATABASE_URL if set, else the embedded PostgreSQL with a demo catalog.
run: $(INSTALLED)
	$(VENV)/bin/catalog run

# Each run creates its own database (on DATABASE_URL's / TEST_DATABASE_URL's server, else the embedded one).
test: $(INSTALLED)
	$(VENV)/bin/python -m pytest

# Heroku's Python buildpack installs requirements.txt: the production dependencies of pyproject.toml,
# pinned as pip resolves them today (no pgserver, no test tools). Run after changing the dependencies.
requirements: $(INSTALLED)
	$(VENV)/bin/python -m config.requirements > requirements.txt
