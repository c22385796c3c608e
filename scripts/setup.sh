#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (as root) for `make run` and `make test`:
# system packages, a virtualenv with the controller requirements, and the collection
# tree Ansible and ansible-test expect (.build/collections/ansible_collections/netstate/tcp).
#
# The fleet (tests/fleet) needs podman's network stack as fleet.py configures it: netavark and
# aardvark-dns, and iptables, with which netavark programs the bridge (without it every host
# fails to start with "netavark: No such file or directory").
# The refusal tests build a real seccomp filter with libseccomp2 (through ctypes) and private
# mount/PID namespaces with util-linux's unshare. The package prometheus brings promtool, which
# checks the collector's exposition text with Prometheus's own parser; the server the package
# would start under systemd is stopped and disabled when this script installed it.
#
# `setup.sh run` prepares only what `make run` and `make dist` need: python3-venv, and ansible-core with
# jmespath (requirements.txt) in .venv. `setup.sh` (every other target) adds the rest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
level=${1:-test}
case "$level" in run|test) ;; *) echo "setup: unknown level '$level' (run or test)" >&2; exit 2 ;; esac

if [ "$level" = run ]; then
    packages=(python3 python3-venv)
else
packages=(python3 python3-venv python3-pip iproute2 net-tools procps openssh-client libseccomp2 util-linux
          podman runc netavark aardvark-dns iptables debootstrap uidmap ca-certificates rsync time prometheus
          nftables ipset netcat-openbsd python3-apt shellcheck chromium prometheus-node-exporter
          openjdk-17-jre-headless)
fi
# netcat-openbsd and python3-apt: the listen_ports_facts compatibility target starts nc servers and
# uses ansible.builtin.package (apt, through the system python's apt bindings). shellcheck: ansible-test
# sanity runs its shellcheck test only when it is installed. chromium: tests/integration/test_fleet_html_browser.py
# renders the HTML fleet pages in headless Chromium (screenshot, console, DOM). prometheus-node-exporter:
# make bench times a tcpstat-only scrape beside the collector, starting its own exporter in the benchmark's
# namespace; the service the package would start is stopped and disabled when this script installed it.
# openjdk-17-jre-headless: ansible-rulebook (tests/integration/test_eda_tcp_health.py) runs its rule engine,
# drools, on a Java runtime.
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing Debian packages (${missing[*]}); run as root or install them" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null \
            && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    if [[ " ${missing[*]} " == *" prometheus-node-exporter "* ]] && command -v systemctl >/dev/null \
            && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true
    fi
fi

# .venv holds requirements.txt after `setup.sh run`, and tests/requirements.txt (which includes it) after
# `setup.sh`; a stamp per level records the requirement files it was installed from.
if [ "$level" = run ]; then requirements=(requirements.txt); else requirements=(requirements.txt tests/requirements.txt); fi
want=$(cat "${requirements[@]}" | sha256sum | cut -d' ' -f1)
full=$(cat requirements.txt tests/requirements.txt | sha256sum | cut -d' ' -f1)
have_run=$(cat .venv/.requirements-run.sha 2>/dev/null || true)
have_test=$(cat .venv/.requirements.sha 2>/dev/null || true)
if [ ! -x .venv/bin/python ] || { [ "$level" = run ] && [ "$have_run" != "$want" ] && [ "$have_test" != "$full" ]; } \
        || { [ "$level" = test ] && [ "$have_test" != "$want" ]; }; then
    [ -x .venv/bin/python ] || { echo "setup: creating .venv"; python3 -m venv .venv; }
    echo "setup: installing ${requirements[-1]} into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -r "${requirements[-1]}"
    if [ "$level" = run ]; then echo "$want" > .venv/.requirements-run.sha; else echo "$want" > .venv/.requirements.sha; fi
fi

mkdir -p .build/collections/ansible_collections/netstate
ln -sfn ../../../.. .build/collections/ansible_collections/netstate/tcp
[ "$level" = run ] && exit 0

# Every systemd fleet host runs systemd, logind and dbus as root of this machine's user namespace, each holding
# inotify instances (about 10 a host); make test runs three lanes of systemd hosts at once, and the kernel's
# default of 128 instances per user runs out: systemd's path units then fail and the host comes up degraded.
inotify_instances=8192
if [ "$(cat /proc/sys/fs/inotify/max_user_instances)" -lt "$inotify_instances" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: fs.inotify.max_user_instances is below $inotify_instances; run as root or raise it" >&2
        exit 1
    fi
    echo "setup: fs.inotify.max_user_instances = $inotify_instances (/etc/sysctl.d/60-netstate-tests.conf)"
    echo "fs.inotify.max_user_instances = $inotify_instances" > /etc/sysctl.d/60-netstate-tests.conf
    sysctl -q -w fs.inotify.max_user_instances="$inotify_instances"
fi

# community.general.listen_ports_facts, the module listener_facts replaces, as the oracle of
# tests/integration/test_listen_ports_compat.py: community.general as the ansible package on PyPI ships
# it, unpacked outside the collection path the other tests use.
oracle_version=12.3.0
oracle=.build/oracle
if [ "$(cat "$oracle/.version" 2>/dev/null)" != "$oracle_version" ]; then
    echo "setup: unpacking community.general from ansible $oracle_version (test oracle)"
    rm -rf "$oracle" && mkdir -p "$oracle/wheel"
    .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$oracle/wheel" "ansible==$oracle_version"
    .venv/bin/python - "$oracle" <<'PY'
import glob, sys, zipfile
oracle = sys.argv[1]
prefix = "ansible_collections/community/general/"
with zipfile.ZipFile(glob.glob(oracle + "/wheel/ansible-*.whl")[0]) as wheel:
    wheel.extractall(oracle, [name for name in wheel.namelist() if name.startswith(prefix)])
PY
    rm -rf "$oracle/wheel"
    echo "$oracle_version" > "$oracle/.version"
fi

