# The README's two commands. Both set everything up first (scripts/setup.sh is idempotent: a second run takes
# well under a second).
.PHONY: setup demo check test lint docs

PORT ?= 8888
# no browser is launched where there is none to show (no display); running as root needs --allow-root
LAB_FLAGS = --ip=127.0.0.1 --port=$(PORT) $(if $(DISPLAY),,--no-browser) $(if $(filter 0,$(shell id -u)),--allow-root)

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -c "import attnsparse_widget as aw; aw.load_model()"  # converts the default model once
	@echo "Starting JupyterLab on notebooks/01_quickstart.ipynb; open the http://127.0.0.1:$(PORT)/... URL it prints."
	.venv/bin/jupyter lab notebooks/01_quickstart.ipynb $(LAB_FLAGS)

# the course site into docs/_build/html/ (index.html), offline; reuses the notebooks the tests executed
docs: setup
	.venv/bin/python scripts/build_docs.py

# the static checks, in this order: lint and formatting (ruff), then types (mypy on src/, tsc on js/)
lint: setup
	.venv/bin/ruff check src tests benchmarks scripts examples
	.venv/bin/ruff format --check src tests benchmarks scripts examples
	.venv/bin/mypy
	npm run --silent typecheck

# The tests run on every core (pytest-xdist, at most 4 workers): a module's tests go to one worker together (its
# module fixtures are made once), the longest tiers first (tests/tiers.py); the workers share the notebook runs
# (tests/notebook_runs.py). Not --dist loadgroup: under pytest 9 it silently stops grouping (pytest-xdist#1386).
PARALLEL = -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder

# the inner loop (a few minutes): the static checks, the frontend's tests, the unit and model tiers
check: setup lint
	npm test --silent
	.venv/bin/python -m pytest -m "unit or model" $(PARALLEL)

# everything, exactly what CI runs (.ci/run); lint depends on setup too, so even `make -j` runs setup, then lint,
# then the tests
test: setup lint
	npm test --silent
	.venv/bin/python -m pytest $(PARALLEL) --durations=25  # where the time goes, in CI's log too
