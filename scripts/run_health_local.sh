#!/usr/bin/env bash
# Runs the netstate.tcp.health playbook on this machine (localhost, local connection) and prints
# the Markdown summary table. Exits with the playbook's status: non-zero when localhost violates a
# rule at netstate_health_fail_on. Extra arguments go to ansible-playbook (e.g. -e netstate_health_fail_on=warning).
# Report files: $NETSTATE_HEALTH_REPORT_DIR (default .build/health-report).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.venv/bin"
export ANSIBLE_COLLECTIONS_PATH="${ANSIBLE_COLLECTIONS_PATH:-$here/.build/collections}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-$here/ansible.cfg}"
report_dir="${NETSTATE_HEALTH_REPORT_DIR:-$here/.build/health-report}"
playbook="$venv/ansible-playbook"
[ -x "$playbook" ] || playbook=ansible-playbook
inventory=$(mktemp)
trap 'rm -f "$inventory"' EXIT
python="$(command -v python3)"
[ -x /usr/bin/python3 ] && python=/usr/bin/python3
echo "localhost ansible_connection=local ansible_python_interpreter=$python" > "$inventory"

"$playbook" netstate.tcp.health -i "$inventory" \
    -e "netstate_health_report_dir=$report_dir" -e '{"netstate_health_show_summary": false}' "$@"
status=$?
if [ -f "$report_dir/health.md" ]; then
    echo
    cat "$report_dir/health.md"
    echo
    echo "Reports: $report_dir/health.junit.xml, health.json, health.md"
fi
exit "$status"
