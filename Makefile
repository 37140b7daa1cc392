# SPDX-License-Identifier: MIT OR Apache-2.0
# The loop's front door. Rules: HARNESS.md. `make run` and `make test` need only python3 + make.

TARGET ?= pq_l2
DESC ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TARGETS := $(patsubst %/run_experiment.py,%,$(wildcard */run_experiment.py))
REPORT_TARGET = $(if $(filter command line environment,$(origin TARGET)),--target $(TARGET))
CONFIRM_AGAINST ?=
export DESC CONFIRM_AGAINST

.PHONY: run check revert test lint setup calibrate confirm conformance report plot peers new-target stress known-target

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
	@$(PY) tools/calibrate.py --target $(TARGET)

confirm: $(PY) known-target ## the champion timed directly against the baseline, at 4 scales (minutes)
	@$(PY) tools/confirm.py --target $(TARGET)

conformance: $(VENV)/.conformance known-target ## the oracle against real Lance (pylance)
	@test -f "$(TARGET)/conformance.py" || { echo "error: $(TARGET) has no conformance.py"; exit 5; }
	@$(PY) $(TARGET)/conformance.py

report: $(PY) ## best kernel, counts and the last 10 runs, per target (TARGET=<t>: one)
	@$(PY) tools/report.py $(REPORT_TARGET)

plot: $(VENV)/.extras ## results.png: speedup per run, one panel per target (matplotlib)
	@$(PY) tools/plot.py $(REPORT_TARGET)

peers: $(VENV)/.peers known-target ## kernels beside other libraries (pq_l2: faiss; fts_bm25: tantivy, bm25s)
	@test -f "$(TARGET)/peers.py" || { echo "error: $(TARGET) has no peers.py"; exit 5; }
	@$(PY) $(TARGET)/peers.py

new-target: $(PY) ## scaffold NAME/ from tools/templates/target/ (see docs/adding-a-target.md)
	@$(PY) tools/new_target.py "$(NAME)"

stress: $(PY) ## a hang returns within budget; 20 parallel runs, some SIGKILLed, lose no row (minutes)
	@$(PY) tools/stress.py

setup: $(PY)

$(VENV)/.%: tools/requirements-%.txt $(PY) ## an optional extra, installed on first use
	@echo "[harness] installing $< into $(VENV) (first use only)" >&2
	@$(PY) -m pip install --quiet --disable-pip-version-check -r $< \
		|| { echo "error: pip could not install $<"; exit 5; }
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
