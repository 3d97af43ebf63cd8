# The two commands of the README.  Both set up .venv first (idempotent).
.PHONY: setup run test smoke lab
setup:
	bash scripts/setup.sh --dev

# The main job: every notebook on the embedded 135M model (cpu profile), into a fresh runs/ folder.
run:
	bash scripts/setup.sh && .venv/bin/cotlab run --profile cpu

test:
	bash scripts/setup.sh --dev && .venv/bin/python -m pytest -q

smoke:
	bash scripts/setup.sh --dev && .venv/bin/cotlab run --profile smoke

# JupyterLab on the lessons, with the environment's kernel; results land in runs/lab, never in notebooks/.
lab:
	bash scripts/setup.sh --dev && .venv/bin/jupyter lab notebooks/
