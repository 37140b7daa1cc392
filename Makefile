# SPDX-License-Identifier: MIT OR Apache-2.0
# The loop's front door. Rules: HARNESS.md. `make run` and `make test` need only python3 + make.

TARGET ?= pq_l2
DESC ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TARGETS := $(patsubst %/run_experiment.py,%,$(wildcard */run_experiment.py))
export DESC

.PHONY: run check revert test lint setup calibrate conformance known-target

run: $(PY) known-target ## one trial: check, time side by side, log, verdict
	@$(PY) $(TARGET)/run_experiment.py

check: $(PY) known-target ## correctness only; writes no row
	@$(PY) $(TARGET)/run_experiment.py --check

revert: $(PY) known-target ## put the champion kernel back into $(TARGET)/kernels.py
	@$(PY) $(TARGET)/run_experiment.py --revert

test: $(PY) ## the test suite (< 2 min)
	@$(PY) -m pytest -q -rs tests

lint: $(PY)
	@$(PY) -m ruff check .

calibrate: $(PY) known-target ## speed, noise and power figures of the gate (minutes)
	@$(PY) calibrate.py --target $(TARGET)

conformance: $(VENV)/.conformance ## the pq_l2 oracle against real Lance (pylance; ~15 s)
	@$(PY) pq_l2/conformance.py

setup: $(PY)

$(VENV)/.conformance: requirements-conformance.txt $(PY)
	@echo "[harness] installing requirements-conformance.txt into $(VENV) (first use only)" >&2
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-conformance.txt \
		|| { echo "error: pip could not install requirements-conformance.txt"; exit 5; }
	@touch $@

$(PY): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11+"; exit 5; }
	@echo "[harness] creating $(VENV) with the pinned requirements (first run only)" >&2
	@$(PYTHON) -m venv $(VENV) || { echo "error: could not create $(VENV) (on Debian: apt-get install python3-venv)"; exit 5; }
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt \
		|| { rm -rf $(VENV); echo "error: pip could not install requirements.txt; $(VENV) removed"; exit 5; }
	@touch $(PY)

known-target:
	@test -f "$(TARGET)/run_experiment.py" \
		|| { echo "error: unknown TARGET '$(TARGET)'; targets: $(TARGETS)"; exit 5; }
