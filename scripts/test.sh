#!/usr/bin/env bash
# `make test` after lint: the pytest suite (unit, integration, the podman fleet) and the ansible-core
# matrix (scripts/matrix.py: sanity, units and a smoke run for 2.16-2.21, the .venv's 2.19 included)
# side by side. Most fleet test time is waiting (package installs, timers, agents' polls), and most
# matrix time is pylint: together they use the two cores better than one after the other. Each has
# fleets of its own (one /27 slice each). Matrix lines come prefixed with [matrix]; the exit status is
# non-zero when either failed, and the last lines say which.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
py=.venv/bin/python
started=$(date +%s)
mkdir -p .build
stamp() { printf '[%4ds]' $(( $(date +%s) - started )); }

echo "$(stamp) test: pytest and the ansible-core matrix start side by side"
read -r -a matrix_args <<< "${MATRIX_ARGS:-}"
read -r -a pytest_args <<< "${PYTEST_ARGS:-}"
( $py scripts/matrix.py "${matrix_args[@]}" 2>&1 | sed -u 's/^/[matrix] /'; exit "${PIPESTATUS[0]}" ) &
matrix=$!

$py -m pytest -q --durations=40 "${pytest_args[@]}"
pytest_status=$?
echo "$(stamp) test: pytest finished (exit $pytest_status); waiting for the matrix"
wait "$matrix"
matrix_status=$?
echo "$(stamp) test: matrix finished (exit $matrix_status)"
if [ "$pytest_status" -ne 0 ] || [ "$matrix_status" -ne 0 ]; then
    echo "test: FAILED (pytest exit $pytest_status, matrix exit $matrix_status)"
    exit 1
fi
echo "test: pytest and the matrix passed in $(( $(date +%s) - started ))s"
