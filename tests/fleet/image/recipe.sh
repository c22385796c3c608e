#!/bin/sh
# Builds the root file system of a fleet host: a minimal Debian (bullseye, bookworm or trixie)
# made with debootstrap, with or without systemd as its init. fleet.py hashes this file (plus
# NETSTATE_FLEET_EXTRA_PACKAGES, the suite and the init) to name the cached image of each kind,
# so any edit here rebuilds every kind on its next `fleet.py up`.
#
# usage: recipe.sh ROOTFS MIRROR CACHE_DIR [EXTRA_PACKAGES [SUITE [INIT]]]
#   SUITE: bullseye, bookworm (default) or trixie; INIT: none (default) or systemd
set -eu
rootfs=$1
mirror=$2
cache_dir=$3
extra=${4:-}
suite=${5:-bookworm}
init=${6:-none}

# What the tests need on a host: Ansible (python3), SSH, ss/ip (iproute2), ps/sysctl
# (procps), netstat for the naive benchmark playbook (net-tools), the usual things a
# role touches (sudo, cron, ca-certificates), and the packet filters (nftables, iptables, ipset).
packages="python3,openssh-server,iproute2,procps,net-tools,sudo,cron,ca-certificates,nftables,iptables,ipset"
later=
case $init in
    none)
        # trixie's cron depends on "systemd | systemd-standalone-sysusers"; debootstrap follows only
        # the first alternative (and then fails to order systemd's pre-dependency), so on a host
        # without systemd cron comes afterwards from apt, with the standalone sysusers.
        if [ "$suite" = trixie ]; then
            packages=$(echo "$packages" | sed 's/,cron,/,/')
            later="cron systemd-standalone-sysusers"
        fi
        ;;
    systemd) packages="$packages,systemd,systemd-sysv,dbus" ;;
    *) echo "recipe.sh: unknown init '$init' (none, systemd)" >&2; exit 2 ;;
esac
if [ -n "$extra" ]; then
    packages="$packages,$extra"
fi

mkdir -p "$cache_dir"
debootstrap --variant=minbase --include="$packages" --cache-dir="$cache_dir" \
    "$suite" "$rootfs" "$mirror"
if [ -n "$later" ]; then
    # No service may start in the chroot (it would run on the build machine).
    printf '#!/bin/sh\nexit 101\n' > "$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    chroot "$rootfs" apt-get update -q
    # shellcheck disable=SC2086  # a list of package names
    DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -q --no-install-recommends $later
    chroot "$rootfs" apt-get clean
    rm -f "$rootfs/usr/sbin/policy-rc.d"
fi

# pam_loginuid fails without CAP_AUDIT_WRITE (user namespace), so it must not refuse the session.
sed -i 's/^session\s\+required\s\+pam_loginuid.so/session optional pam_loginuid.so/' \
    "$rootfs/etc/pam.d/sshd"
mkdir -p "$rootfs/etc/ssh/sshd_config.d"
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

if [ "$init" = systemd ]; then
    units="$rootfs/etc/systemd/system"
    # sshd is a unit: its host key is made before `sshd -t` checks the configuration.
    mkdir -p "$units/ssh.service.d"
    cat > "$units/ssh.service.d/netstate-fleet.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -f /etc/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
UNIT
    ln -sf /lib/systemd/system/ssh.service "$units/multi-user.target.wants/ssh.service"
    # Nothing is masked: the units a container cannot use (console-getty, getty@tty1,
    # systemd-firstboot, udev triggers...) are skipped by their own conditions, and boot reaches
    # "running" (checked by test_kinds_run_their_system_and_init).
    # The machine id is made at boot (each host its own), not baked into the image.
    : > "$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"
fi

# Keep the image small and the apt lists out of it.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
