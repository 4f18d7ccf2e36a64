.PHONY: setup dev test lint bench profile drills simulate

SEEDS ?= 100000
START ?= 0
LIVE_ROOMS ?= 0

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

# Where a replica's CPU goes per room (py-spy on bench section 9): make profile LIVE_ROOMS=100000
profile:
	scripts/setup
	UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --quiet --locked --inexact --compile-bytecode --extra dev --extra bench
	.venv/bin/python -m bench.profile --live-rooms $(LIVE_ROOMS)

simulate:
	SEEDS=$(SEEDS) START=$(START) scripts/simulate
