#!/usr/bin/env bash
# Traffik's tests in Docker: the test runner of docker-compose.yml against its Redis and
# Memcached services. `./docker-test.sh --help` lists the commands.
set -euo pipefail
cd "$(dirname "$0")"

MATRIX_PYTHONS=(3.9 3.10 3.11 3.12 3.13)

usage() {
  cat <<'USAGE'
Usage: ./docker-test.sh COMMAND

Commands:
  test         the full suite (ruff, mypy, in-memory, Redis and Memcached tests) in the
               test runner, against the redis and memcached services; CI=true, so a
               server that cannot be reached fails the run instead of skipping tests
  test-fast    the in-memory tests only: SKIP_REDIS_TESTS=true SKIP_MEMCACHED_TESTS=true,
               no services started
  test-matrix  the test suite under Python 3.9, 3.10, 3.11, 3.12 and 3.13, one runner
               image per version, against the same services
  dev          a shell in the test runner with the working tree mounted at /traffik and
               Redis and Memcached running (TRAFFIK_REDIS_URL, TRAFFIK_MEMCACHED_URL set)

Environment:
  PYTHON_VERSION   the runner's Python for test, test-fast and dev (default 3.12)
  REDIS_PORT       the loopback port Redis is published on (default 6379; change it
                   when a local Redis holds that port)
  MEMCACHED_PORT   the loopback port Memcached is published on (default 11211)
USAGE
}

# BuildKit for the Dockerfile's pip cache, also under the standalone docker-compose v1.
export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1

# Found once, before any command runs (and before the exit trap that stops the services).
compose_command=()

find_compose() {
  if docker compose version >/dev/null 2>&1; then
    compose_command=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    compose_command=(docker-compose)
  else
    echo "docker-test.sh: needs Docker Compose: the 'docker compose' plugin (Docker Desktop," \
      "or Docker Engine with docker-compose-plugin) or the standalone docker-compose" >&2
    exit 1
  fi
}

compose() {
  "${compose_command[@]}" "$@"
}

# Both runner services sit behind profiles, so `docker compose up` starts only the servers.
export COMPOSE_PROFILES=tests,dev

# No TTY (as on CI): tell `compose run` not to ask for one.
run_flags=(--rm)
if [ ! -t 0 ] || [ ! -t 1 ]; then
  run_flags+=(-T)
fi

stop_services() {
  compose down --remove-orphans
}

case "${1:-}" in
  test | test-fast | test-matrix | dev) find_compose ;;
esac

case "${1:-}" in
  test)
    trap stop_services EXIT
    compose build tests
    compose run "${run_flags[@]}" -e CI=true tests make test
    ;;
  test-fast)
    compose build tests
    compose run "${run_flags[@]}" --no-deps \
      -e SKIP_REDIS_TESTS=true -e SKIP_MEMCACHED_TESTS=true tests make test-fast
    ;;
  test-matrix)
    trap stop_services EXIT
    failed=()
    for version in "${MATRIX_PYTHONS[@]}"; do
      echo "docker-test.sh: Python $version"
      export PYTHON_VERSION="$version"
      if ! { compose build tests && compose run "${run_flags[@]}" -e CI=true tests make pytest; }; then
        failed+=("$version")
      fi
    done
    if [ "${#failed[@]}" -gt 0 ]; then
      echo "docker-test.sh: test-matrix failed under Python ${failed[*]}" >&2
      exit 1
    fi
    echo "docker-test.sh: test-matrix passed under Python ${MATRIX_PYTHONS[*]}"
    ;;
  dev)
    trap stop_services EXIT
    compose build dev
    compose run --rm dev
    ;;
  -h | --help | help)
    usage
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
