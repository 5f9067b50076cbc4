# Two commands: `make report` (report + slides into _output/) and `make test`.
# Each creates or reuses .venv and re-installs only when requirements.lock changed.
# requirements.txt is the human-edited list; requirements.lock (exact versions and hashes, every OS and
# Python >= 3.10) is generated from it by `make lock` and is what gets installed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-requirements.lock

.PHONY: report test test-kernels lint lock check study bench demo clean setup

setup: $(STAMP)

$(STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	@cp requirements.lock $(STAMP)

lock: $(STAMP)    ## regenerate requirements.lock from requirements.txt (after editing it, or to take new releases)
	$(PY) -m uv pip compile --quiet --universal --generate-hashes --python-version 3.10 \
	    --custom-compile-command "make lock" requirements.txt -o requirements.lock

report: $(STAMP)  ## report.html, report.pdf and slides.html in _output/
	$(PY) -m pipeline render

study: $(STAMP)   ## run (or load from the cache) the whole study and print its summary
	$(PY) -m pipeline study

check: $(STAMP)   ## validate the configured data folder
	$(PY) -m pipeline check

# torch picks CPU vector kernels from the host (AVX-512, AVX2, none): the tests on trained networks
# (marker `kernels`) run again capped at each kernel set, so that they hold on every machine.
KERNELS := avx2 default

test: $(STAMP)
	$(PY) -m pytest -q
	@$(MAKE) --no-print-directory test-kernels

test-kernels: $(STAMP)  ## the tests on trained networks, under each CPU kernel set
	@for k in $(KERNELS); do \
	    echo "== tests on trained networks with ATEN_CPU_CAPABILITY=$$k"; \
	    ATEN_CPU_CAPABILITY=$$k $(PY) -m pytest -q -m kernels -p no:cacheprovider || exit 1; \
	done

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m pipeline.bench

clean:            ## empty the cache and the outputs (your data is never touched)
	rm -rf cache _output
