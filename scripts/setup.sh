#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (as root) for `make run` and `make test`:
# system packages, a virtualenv with the controller requirements, and the collection
# tree Ansible and ansible-test expect (.build/collections/ansible_collections/netstate/tcp).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

packages=(python3 python3-venv python3-pip iproute2 net-tools procps openssh-client
          podman runc netavark aardvark-dns debootstrap uidmap ca-certificates rsync time
          shellcheck)   # ansible-test sanity runs its shellcheck test only when it is installed
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
fi

stamp=.venv/.requirements.sha
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
    echo "$want" > "$stamp"
fi

mkdir -p .build/collections/ansible_collections/netstate
ln -sfn ../../../.. .build/collections/ansible_collections/netstate/tcp
