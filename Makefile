# avwatch: the two commands of the README are `make demo` and `make test`; both set everything up.
# The virtual environment lives at .venv/, the jar cache at .cache/, local state at .avwatch/ (all git-ignored).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export AVWATCH_CACHE ?= $(CURDIR)/.cache
export AVWATCH_STATE ?= $(CURDIR)/.avwatch

.PHONY: install venv jars system-deps demo test test-fast bench clean

install: venv jars                    ## the set-up alone: venv with pinned packages, jars resolved

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt setup.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "avwatch needs Python 3.11+; set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

jars: venv                            ## Spark connectors + Kafka broker jars from Maven Central, once
	@$(BIN)/avwatch jars --set spark > /dev/null
	@$(BIN)/avwatch jars --set kafka > /dev/null

system-deps:                          ## Debian packages the tests use: ffmpeg (oracle), espeak-ng (speech), chromium
	@scripts/install-system-deps.sh

demo: install                         ## start the local stack and run the main job on the embedded defaults
	$(BIN)/avwatch demo

test: install system-deps             ## the whole test suite (real Kafka, Spark, Delta)
	$(BIN)/pytest

test-fast: venv system-deps          ## no JVM (no Kafka, no Spark) and no footage/oracle tier: under 90 s
	$(BIN)/pytest -m "not spark and not kafka and not footage"

bench: install system-deps            ## benchmarks against anchors -> docs/benchmarks.md and .json
	$(BIN)/python bench/run.py

clean:                                ## stop the local broker and remove local state (keeps venv and jars)
	-@test -x $(BIN)/avwatch && $(BIN)/avwatch stack down --purge
	rm -rf $(AVWATCH_STATE) build dist *.egg-info
