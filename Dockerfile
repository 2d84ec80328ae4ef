# PatrolLink engine image (also runs the other PatrolLink processes: the
# camera adapter, console and simulator services in docker-compose.yml use it
# with another command).
#
#   docker build -t patrollink .
#   docker compose up            # nats + engine
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs, so that a local .venv/ or test artefacts never
# end up in the image.
COPY pyproject.toml README.md ./
COPY dispatch ./dispatch
COPY adapters ./adapters
COPY simulators ./simulators
COPY bench ./bench
# gcc for the road search's compiled loop (dispatch/_search.c; the image has Python's headers), removed
# again once it is built
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install . \
    && cd / && python -c "import dispatch._search" && cd /app \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

# The camera detector's compiled HOG search (numba), built into the image so that a camera does not
# spend ~12 s compiling at start. Run from / so that it compiles the installed package (numba files
# its cache by the source's path). The cache is for the build host's CPU model; on another model
# the first camera process compiles once into the same folder, which the runtime user may write.
ENV NUMBA_CACHE_DIR=/app/numba-cache
RUN cd / && python -m adapters.camera.hogfast

# District files and NATS configs are read at run time, relative to /app.
COPY config ./config

RUN useradd --system --home-dir /app --shell /usr/sbin/nologin patrollink \
    && mkdir -p /app/var && chown patrollink /app/var \
    && chown -R patrollink /app/numba-cache
USER patrollink

CMD ["patrollink", "engine", "--district", "config/districts/tieshan.yaml", "--nats", "nats://nats:4222"]
