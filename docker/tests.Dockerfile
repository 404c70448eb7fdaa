# syntax=docker/dockerfile:1
# The test runner of docker-compose.yml: the repository and its .venv (`make install`), plus
# redis-server and memcached for the tests that start servers of their own (a Redis Cluster,
# a Sentinel, servers they stop and restart). One image per Python: PYTHON_VERSION=3.9 ... 3.13.
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends make memcached redis-server redis-tools \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /traffik
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip make install

CMD ["make", "test"]
