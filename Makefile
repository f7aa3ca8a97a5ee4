# minihcx: two commands.
#   make demo  - set up .venv and run the whole pipeline on the embedded default data
#   make test  - set up .venv (with the test-only requirements) and run the test suite
# Each demo stage is a file target, so a stage whose output already exists is skipped.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= out

.PHONY: demo test clean venv

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed-test
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed
	@echo "the demo grows with the pipeline; see README.md"

clean:
	rm -rf $(OUT)
