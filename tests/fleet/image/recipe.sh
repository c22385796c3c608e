#!/bin/sh
# Builds the root file system of a fleet host: a minimal Debian 12 (bookworm) made with
# debootstrap. fleet.py hashes this file (plus NETSTATE_FLEET_EXTRA_PACKAGES) to name the
# cached image, so any edit here rebuilds the image on the next `fleet.py up`.
#
# usage: recipe.sh ROOTFS MIRROR CACHE_DIR [EXTRA_PACKAGES]
set -eu
rootfs=$1
mirror=$2
cache_dir=$3
extra=${4:-}

# What the tests need on a host: Ansible (python3), SSH, ss/ip (iproute2), ps/sysctl
# (procps), netstat for the naive benchmark playbook (net-tools), and the usual things a
# role touches (sudo, cron, ca-certificates).
packages="python3,openssh-server,iproute2,procps,net-tools,sudo,cron,ca-certificates,nftables,iptables,ipset"
if [ -n "$extra" ]; then
    packages="$packages,$extra"
fi

mkdir -p "$cache_dir"
debootstrap --variant=minbase --include="$packages" --cache-dir="$cache_dir" \
    bookworm "$rootfs" "$mirror"

# No systemd in a container: sshd runs as the container command. pam_loginuid fails
# without CAP_AUDIT_WRITE, so it must not refuse the session.
sed -i 's/^session\s\+required\s\+pam_loginuid.so/session optional pam_loginuid.so/' \
    "$rootfs/etc/pam.d/sshd"
cat > "$rootfs/etc/ssh/sshd_config.d/netstate-fleet.conf" <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
UseDNS no
MaxStartups 200
MaxSessions 100
CONF
# Host keys are made when each container starts, so hosts do not share them.
rm -f "$rootfs"/etc/ssh/ssh_host_*
install -d -m 0700 "$rootfs/root/.ssh"
install -d -m 0755 "$rootfs/run/sshd"
# Keep the image small and the apt lists out of it.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
