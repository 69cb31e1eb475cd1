# Satchel: one image for every role (web, worker, beat, migrate); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    STATIC_ROOT=/app/staticfiles HOST=0.0.0.0 PORT=8000
WORKDIR /app

COPY pyproject.toml README.md ./
COPY webapp/ webapp/
COPY mailcore/ mailcore/
COPY ftpcore/ ftpcore/
RUN pip install .

COPY manage.py ./
COPY templates/ templates/
COPY static/ static/
# collectstatic only reads settings: placeholder values, no server is contacted.
RUN DATABASE_URL=postgres://build@localhost/build REDIS_URL=redis://localhost:6379/0 \
    SECRET_KEY=build-only SATCHEL_ENCRYPTION_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    python manage.py collectstatic --noinput --verbosity 0

RUN useradd --system --uid 1000 satchel && mkdir -p /app/data && chown satchel /app/data
ENV SATCHEL_DATA_DIR=/app/data
USER satchel
EXPOSE 8000
CMD ["python", "-m", "webapp.launcher", "web"]
