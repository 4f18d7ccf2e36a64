.PHONY: setup dev test lint bench drills simulate

SEEDS ?= 100000
START ?= 0

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
	UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --quiet --locked --inexact --compile-bytecode --extra dev --extra bench
	.venv/bin/python -m bench

simulate:
	SEEDS=$(SEEDS) START=$(START) scripts/simulate
