# bulkjobs: one image for the three parts (`bulkjobs api`, `bulkjobs worker`, `bulkjobs store`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first (a stub package with the real pyproject.toml), so that a code change does
# not reinstall them. Every dependency ships a manylinux wheel for CPython 3.11: no compiler.
COPY pyproject.toml README.md ./
RUN mkdir bulkjobs && touch bulkjobs/__init__.py \
 && pip install . \
 && pip uninstall -y bulkjobs \
 && rm -rf bulkjobs build bulkjobs.egg-info

# The project itself, without the dev extras (no Tansu, no pytest).
COPY bulkjobs ./bulkjobs
RUN pip install --no-deps . \
 && rm -rf /src/build \
 && useradd --system --user-group --uid 10001 --create-home --home-dir /home/bulkjobs bulkjobs \
 && mkdir -p /data \
 && chown bulkjobs:bulkjobs /data

# SQLite view, spool files and the worker's Faust data dir live under /data; the API and the
# store must share it.
ENV BULKJOBS_DATA_DIR=/data \
    BULKJOBS_HOST=0.0.0.0 \
    BULKJOBS_PORT=8080
VOLUME ["/data"]
EXPOSE 8080

# The API is healthy once it can publish to Kafka and read the view (GET /readyz; GET /livez only
# says that it runs). The worker and the store serve no HTTP: their containers turn this off
# (docker-compose.yml does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=6 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['BULKJOBS_PORT'] + '/readyz', timeout=4)"]

USER bulkjobs
WORKDIR /home/bulkjobs
ENTRYPOINT ["bulkjobs"]
CMD ["api"]
