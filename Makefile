# Two commands: `make report` (report + slides into _output/) and `make test`.
# Each creates or reuses .venv and re-installs only when requirements.txt changed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-requirements.txt

.PHONY: report test lint check study bench demo clean setup

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@cp requirements.txt $(STAMP)

report: $(STAMP)  ## report.html, report.pdf and slides.html in _output/
	$(PY) -m pipeline render

study: $(STAMP)   ## run (or load from the cache) the whole study and print its summary
	$(PY) -m pipeline study

check: $(STAMP)   ## validate the configured data folder
	$(PY) -m pipeline check

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m pipeline.bench

clean:            ## empty the cache and the outputs (your data is never touched)
	rm -rf cache _output
