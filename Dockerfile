# syntax=docker/dockerfile:1
# Multi-stage image for web, worker and scheduler (one image, three commands; see docker-compose.yml).

FROM python:3.11-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY manage.py ./
COPY console ./console
COPY recovery ./recovery
COPY templates ./templates
# collectstatic needs settings to load, not real services or secrets.
RUN DEBUG=0 SECRET_KEY=build-only-not-a-secret AUDIT_HMAC_KEY=build-only-not-a-secret-audit-key \
    DATABASE_URL=postgres://build@localhost/build \
    .venv/bin/python manage.py collectstatic --noinput

FROM python:3.11-slim-bookworm AS runtime
RUN useradd --system --uid 10001 --gid 0 --home-dir /app --no-create-home dlq \
    && mkdir -p /var/lib/dlq-metrics && chown 10001:0 /var/lib/dlq-metrics
WORKDIR /app
COPY --from=build --chown=10001:0 /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=console.settings
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/login/', timeout=4)" || exit 1
CMD ["gunicorn", "console.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-", "--forwarded-allow-ips", "*"]
