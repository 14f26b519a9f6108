# Tepat API image. Production sets TEPAT_DATABASE_URL (PostgreSQL 15+), logging in as the
# service's own role (made once by the owner: `tepat db service-role tepat_api`; the service
# refuses to start as a superuser or an owner), TEPAT_AUDIT_HMAC_KEY and TEPAT_AUDIT_SIGNING_KEY
# (a key file from `tepat audit keygen`, mounted read-only, e.g. as a secret).
# The embedded PostgreSQL of the demo is not used in a container.
FROM python:3.11-slim AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /srv/tepat
# Dependencies first (cached layer), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY migrations ./migrations
COPY alembic.ini ./
RUN uv sync --frozen --no-dev

FROM python:3.11-slim
RUN groupadd --system tepat && useradd --system --gid tepat --home /srv/tepat tepat
WORKDIR /srv/tepat
COPY --from=build --chown=tepat:tepat /srv/tepat /srv/tepat
ENV PATH="/srv/tepat/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    TEPAT_ENV=production \
    TEPAT_HOST=0.0.0.0 \
    TEPAT_PORT=8000 \
    TEPAT_LOG_JSON=true
USER tepat
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# Migrations are a deploy step (`tepat db upgrade` as the owning role), not part of start-up.
CMD ["tepat", "serve", "--workers", "2"]
