# The two commands of the README. Both create .venv once from pyproject.toml and reuse it.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo venv clean

venv: $(STAMP)

# Re-install only when the project's own dependency list changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# make demo SEEDS=3 ABLATION=1 METHODS=all: mean and spread over seeds, plus the adv-only / ent-only
# models, plus the later methods (METHODS=all, or some of be,actorcutmix,fame,stillmix,albar)
demo: $(STAMP)
	$(PY) -m train.demo $(if $(SEEDS),--seeds $(SEEDS)) $(if $(ABLATION),--ablation) $(if $(METHODS),--methods $(METHODS))

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
