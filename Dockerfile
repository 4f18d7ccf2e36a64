# switchboard:latest: one image for every component (orchestrator, ingest, worker, operator commands).
#
#   docker build -t switchboard:latest .
#   docker run --rm switchboard:latest switchboard worker --help
#
# The command always starts with `switchboard` (tini is the entrypoint), as in
# deploy/compose/docker-compose.yml (`command:`) and deploy/k8s/*.yaml (`args:`).
# The Python environment is uv.lock's base dependencies, installed by scripts/install-runtime: the same
# lock CI tests and `make dev` runs (tests/integration/test_image_install.py re-runs this build stage).
# No HEALTHCHECK: probe /healthz and /readyz on SWITCHBOARD_HTTP_PORT (orchestrator), the ingest's --port and the
# worker's --health-port (deploy/k8s has the probes).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The uv that writes uv.lock (scripts/setup pins the same version).
ARG UV_VERSION=0.13.9
ENV UV_PYTHON=/usr/local/bin/python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first: this layer changes only with the lock.
COPY pyproject.toml uv.lock ./
COPY scripts/install-runtime scripts/
RUN --mount=type=cache,target=/root/.cache/uv scripts/install-runtime /opt/venv --deps-only
# Then the project (every package of [tool.setuptools.packages.find] in pyproject.toml).
COPY README.md ./
COPY shared/ shared/
COPY orchestrator/ orchestrator/
COPY agent_worker/ agent_worker/
COPY devstack/ devstack/
COPY switchboard/ switchboard/
RUN --mount=type=cache,target=/root/.cache/uv scripts/install-runtime /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="switchboard" \
      org.opencontainers.image.description="Dispatches LiveKit agents to regional worker pools over NATS: orchestrator, webhook ingest, agent worker and operator CLI in one image." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# espeak-ng: the default agent's voice (no cloud key); tini: PID 1 that forwards SIGTERM (the worker
# drains on it) and reaps the job processes of `--executor process`.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 switchboard \
    && useradd --uid 10001 --gid switchboard --create-home --home-dir /home/switchboard \
        --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/switchboard
# The image must start: every subcommand imports, and the voice is there.
RUN switchboard --help >/dev/null && switchboard worker --help >/dev/null && espeak-ng --version
# orchestrator HTTP (SWITCHBOARD_HTTP_PORT, as deployed), worker health (--health-port), ingest.
EXPOSE 8080 8081 8090
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["switchboard", "--help"]
