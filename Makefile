# The two commands of the README. Both set everything up first (idempotent).
.PHONY: sandbox test setup down bench lint

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

lint: setup
	@.venv/bin/pip install -q -e '.[dev]' --config-settings editable_mode=compat >/dev/null
	@.venv/bin/python -m pyflakes pvc tasks workers cli tests bench
	@.venv/bin/ruff check --select I pvc tasks workers cli tests bench
	@.venv/bin/python -m mypy pvc tasks workers cli --ignore-missing-imports
