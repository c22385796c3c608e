#!/usr/bin/env bash
# `make test` after lint: three lanes side by side, each with fleets of its own (one /27 slice each):
#   - pytest over unit, integration and fleet tests, except the two systemd-fleet modules;
#   - [systemd] pytest over tests/fleet/test_kinds.py and tests/fleet/test_servers.py's Debian 12
#     generation, the longest fleet setups (every Debian release with systemd, real Zabbix 6.0 and
#     Prometheus 2.42 servers);
#   - [loop] pytest over tests/fleet/test_closed_loop.py, tests/fleet/test_remediate.py and
#     tests/fleet/test_zabbix_route.py: the closed loop (Prometheus, Alertmanager, Zabbix's webhook on
#     Zabbix 6.0 and 7.0, ansible-rulebook, the guarded remediation) on systemd fleets; then
#     tests/fleet/test_servers.py's Debian 13 generation (Zabbix 7.0, Prometheus 2.53), beside the other;
#   - [matrix] the ansible-core matrix (scripts/matrix.py: sanity, units and a smoke run for 2.16-2.21,
#     the .venv's 2.19 included).
# Most fleet test time is waiting (package installs, timers, agents' polls), and most matrix time is
# pylint: together they use the two cores better than one after the other. With PYTEST_ARGS, one
# pytest runs with just those arguments beside the matrix. Lines of the other lanes come prefixed;
# the exit status is non-zero when any lane failed, and the last lines say which.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 1
py=.venv/bin/python
started=$(date +%s)
lanes=.build/lanes
rm -rf "$lanes"
mkdir -p "$lanes"
stamp() { printf '[%4ds]' $(( $(date +%s) - started )); }

echo "$(stamp) test: pytest, the systemd-fleet lane and the ansible-core matrix start side by side"
read -r -a matrix_args <<< "${MATRIX_ARGS:-}"
read -r -a pytest_args <<< "${PYTEST_ARGS:-}"
( $py scripts/matrix.py "${matrix_args[@]}" 2>&1 | tee "$lanes/matrix.log" | sed -u 's/^/[matrix] /'; exit "${PIPESTATUS[0]}" ) &
matrix=$!

systemd_status=0
loop_status=0
if [ "${#pytest_args[@]}" -eq 0 ]; then
    # test_servers.py runs in both lanes, one server generation in each (its markers, pytest.ini)
    systemd_lane=(tests/fleet/test_kinds.py tests/fleet/test_servers.py -m "not servers_debian13")
    loop_lane=(tests/fleet/test_closed_loop.py tests/fleet/test_remediate.py
               tests/fleet/test_zabbix_route.py tests/fleet/test_servers.py
               -m "not servers_debian12")
    ( $py -m pytest -q --durations=15 "${systemd_lane[@]}" 2>&1 | tee "$lanes/systemd.log" | sed -u 's/^/[systemd] /'
      exit "${PIPESTATUS[0]}" ) &
    systemd=$!
    ( $py -m pytest -q -s --durations=15 "${loop_lane[@]}" 2>&1 | tee "$lanes/loop.log" | sed -u 's/^/[loop] /'
      exit "${PIPESTATUS[0]}" ) &
    loop=$!
    for path in "${systemd_lane[@]}" "${loop_lane[@]}"; do
        case "$path" in tests/*) pytest_args+=("--ignore=$path") ;; esac
    done
fi

$py -m pytest -q --durations=40 "${pytest_args[@]}"
pytest_status=$?
echo "$(stamp) test: pytest finished (exit $pytest_status); waiting for the other lanes"
if [ -n "${systemd:-}" ]; then
    wait "$systemd"
    systemd_status=$?
    echo "$(stamp) test: the systemd lane finished (exit $systemd_status)"
fi
if [ -n "${loop:-}" ]; then
    wait "$loop"
    loop_status=$?
    echo "$(stamp) test: the loop lane finished (exit $loop_status)"
fi
wait "$matrix"
matrix_status=$?
echo "$(stamp) test: matrix finished (exit $matrix_status)"
if [ "$pytest_status" -ne 0 ] || [ "$systemd_status" -ne 0 ] || [ "$loop_status" -ne 0 ] \
        || [ "$matrix_status" -ne 0 ]; then
    # the side lanes' verdicts again, unprefixed and together, so the end of the output names every failure
    for lane in systemd loop matrix; do
        status_name="${lane}_status"
        if [ "${!status_name}" -ne 0 ] && [ -f "$lanes/$lane.log" ]; then
            echo "test: the $lane lane failed; its summary ($lanes/$lane.log):"
            grep -E '^(FAILED|ERROR) ' "$lanes/$lane.log" | head -20
            grep -E '^(E  |>  )' "$lanes/$lane.log" | head -30
            tail -n 5 "$lanes/$lane.log"
        fi
    done
    echo "test: FAILED (pytest exit $pytest_status, systemd lane exit $systemd_status, loop lane exit" \
         "$loop_status, matrix exit $matrix_status)"
    exit 1
fi
echo "test: every lane passed in $(( $(date +%s) - started ))s"
