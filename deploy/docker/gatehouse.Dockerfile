# syntax=docker/dockerfile:1.7
# Gatehouse application images: one build, three targets that differ only in their command.
#
#   docker build -f deploy/docker/gatehouse.Dockerfile --target web    -t gatehouse/web:0.1.0 .
#   docker build -f deploy/docker/gatehouse.Dockerfile --target worker -t gatehouse/worker:0.1.0 .
#   docker build -f deploy/docker/gatehouse.Dockerfile --target beat   -t gatehouse/beat:0.1.0 .
#
# The migration job and the decision log's sequencer run the web image with another command
# (`manage.py migrate`, `manage.py run_sequencer`; health check gatehouse-sequencer-check).
#
# Build context: the repository root. No secret is needed or kept: collectstatic runs with a
# throwaway key that exists only for that RUN step. Configuration comes from the environment
# and from secret files at run time (SECRET_KEY_FILE, PSEUDONYM_KEY_FILE, DATABASE_URL_FILE, ...).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# torch 2.13.0 CPU wheels: PyPI's Linux wheel of torch is the multi-GB CUDA build
# (../shared/notes/stack.md, trap 1), so torch comes first, from the CPU index, and pinned.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0+cpu

# --- builder: a virtual environment with the project and its pinned dependencies -------------
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_INDEX_URL
ARG TORCH_VERSION
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/gatehouse/venv
ENV PATH=/opt/gatehouse/venv/bin:$PATH
WORKDIR /src
COPY deploy/docker/constraints.txt /src/constraints.txt
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md /src/
COPY gatehouse /src/gatehouse
COPY apps /src/apps
# The project's dependencies only: the code itself runs from /opt/gatehouse/app (PYTHONPATH).
RUN pip install --constraint /src/constraints.txt /src \
    && pip uninstall --yes gatehouse \
    && pip check \
    && python -c "import torch, sys; sys.exit(0 if torch.__version__ == '${TORCH_VERSION}' else 'torch was replaced: ' + torch.__version__)"

# --- runtime: the code, the venv and the collected static files; no compiler, no pip cache ---
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gatehouse/venv/bin:$PATH \
    PYTHONPATH=/opt/gatehouse/app \
    DJANGO_SETTINGS_MODULE=gatehouse.settings \
    GATEHOUSE_ENV=production \
    GATEHOUSE_VAR_DIR=/var/lib/gatehouse \
    ARTIFACT_STORE_DIR=/srv/gatehouse/artifacts \
    TORCHSERVE_MODEL_STORE=/srv/gatehouse/model_store \
    TMPDIR=/tmp
# One unprivileged user (uid 10001) for every Gatehouse process. TorchServe's image uses the same
# uid so that its key_file.json (mode 0600, on a shared volume) is readable here.
RUN groupadd --system --gid 10001 gatehouse \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gatehouse --shell /usr/sbin/nologin gatehouse \
    && mkdir -p /var/lib/gatehouse/celery /var/lib/gatehouse/log-checkpoints /srv/gatehouse/artifacts /srv/gatehouse/model_store /var/lib/torchserve/keys \
    && chown -R 10001:10001 /var/lib/gatehouse /srv/gatehouse /var/lib/torchserve
COPY --from=builder /opt/gatehouse/venv /opt/gatehouse/venv
WORKDIR /opt/gatehouse/app
COPY --chown=root:root manage.py /opt/gatehouse/app/manage.py
COPY --chown=root:root gatehouse /opt/gatehouse/app/gatehouse
COPY --chown=root:root apps /opt/gatehouse/app/apps
COPY --chown=root:root frontend /opt/gatehouse/app/frontend
COPY --chown=root:root deploy/docker/healthcheck.py /usr/local/bin/gatehouse-healthcheck
COPY --chown=root:root deploy/docker/sequencer_healthcheck.py /usr/local/bin/gatehouse-sequencer-check
# Hashed, compressed static files baked into the image (read-only at run time). The two keys
# below are throwaways that only exist during this step (production settings refuse to load
# without them; collectstatic signs nothing); nothing is stored with them.
RUN GATEHOUSE_VAR_DIR=/var/lib/gatehouse SECRET_KEY=collectstatic-only-not-a-secret \
        LOG_SIGNING_KEY=collectstatic-only-not-a-key \
        python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R 10001:10001 /var/lib/gatehouse \
    && chmod 0555 /usr/local/bin/gatehouse-healthcheck /usr/local/bin/gatehouse-sequencer-check
USER 10001:10001
STOPSIGNAL SIGTERM

# --- web: HTTP and websockets (ASGI). WEB_CONCURRENCY uvicorn worker processes per container.
# A WSGI tier for /api/ would be cheaper per request (docs/performance.md) but needs a server
# the project does not depend on (gunicorn or granian) and a path-routing proxy; not done.
FROM runtime AS web
ENV WEB_CONCURRENCY=2
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/gatehouse-healthcheck"]
CMD ["uvicorn", "gatehouse.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--lifespan", "off", "--no-server-header", "--proxy-headers", \
     "--timeout-graceful-shutdown", "25"]

# --- worker: Celery worker; the queues are given by the deployment (-Q), default: all three --
FROM runtime AS worker
ENV CELERY_QUEUES=batch,explanations,maintenance,celery \
    CELERY_CONCURRENCY=2
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "celery -A gatehouse inspect ping --timeout 10 -d \"gatehouse@$(hostname)\" >/dev/null"]
CMD ["sh", "-c", "exec celery -A gatehouse worker --loglevel INFO --queues \"$CELERY_QUEUES\" --concurrency \"$CELERY_CONCURRENCY\" --hostname \"gatehouse@$(hostname)\" --without-mingle"]

# --- beat: Celery beat. Exactly one replica; its schedule file lives in $GATEHOUSE_VAR_DIR/celery.
FROM runtime AS beat
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "find /var/lib/gatehouse/celery -maxdepth 1 -name 'beat-schedule*' -mmin -10 | grep -q ."]
CMD ["celery", "-A", "gatehouse", "beat", "--loglevel", "INFO"]
