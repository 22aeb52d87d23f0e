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

demo: $(STAMP)
	@echo "make demo: not there yet (the end-to-end demo is built with the evaluation issue)." >&2
	@exit 1

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
