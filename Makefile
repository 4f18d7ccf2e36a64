.PHONY: setup dev test lint bench drills

setup:
	scripts/setup

dev:
	scripts/dev

test:
	scripts/test

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

drills:
	scripts/drills

bench:
	scripts/setup
	.venv/bin/uv pip install --quiet --python .venv/bin/python -e '.[dev,bench]'
	.venv/bin/python -m bench
