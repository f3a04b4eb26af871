# The two commands of the README. Both set everything up first (idempotent).
.PHONY: sandbox test setup down bench

setup:
	@scripts/setup.sh

sandbox: setup
	@.venv/bin/pvc sandbox up

test: setup
	@.venv/bin/python -m pytest

down:
	@.venv/bin/pvc sandbox down

bench: setup
	@.venv/bin/python -m bench.run_all
