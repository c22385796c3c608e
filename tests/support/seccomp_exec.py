# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a command under a seccomp filter that refuses netlink sock_diag sockets, or new processes, as a
sandbox would.

    python3 seccomp_exec.py [--errno EPERM] [--refuse sock_diag|fork] -- COMMAND [ARG...]

The sock_diag filter (libseccomp through ctypes, the default) makes socket(AF_NETLINK, any type,
NETLINK_SOCK_DIAG) fail with the given errno and allows every other system call, so `ip` (NETLINK_ROUTE),
ansible-playbook and its modules run as usual. The fork filter makes fork, vfork, clone and clone3 fail
with it (a process that may not start processes or threads, as a tight sandbox or an exhausted
RLIMIT_NPROC leaves one). The filter is inherited by every child process. Before exec it is proven: the
refused socket fails with that errno and a NETLINK_ROUTE socket opens, or os.fork() fails with it.
"""

import ctypes
import ctypes.util
import errno
import os
import socket
import sys

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
AF_NETLINK = 16
NETLINK_ROUTE = 0
NETLINK_SOCK_DIAG = 4


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp of <seccomp.h>."""
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def scmp_act_errno(number):
    return 0x00050000 | (number & 0x0000FFFF)


FORK_SYSCALLS = (b"fork", b"vfork", b"clone", b"clone3")


def refuse_sock_diag(number=errno.EPERM):
    _load_filter(number, [(b"socket", [ArgCmp(0, SCMP_CMP_EQ, AF_NETLINK, 0),
                                       ArgCmp(2, SCMP_CMP_EQ, NETLINK_SOCK_DIAG, 0)])])


def refuse_fork(number=errno.EAGAIN):
    _load_filter(number, [(name, []) for name in FORK_SYSCALLS])


def _load_filter(number, refused):
    """Allow every system call but the (name, argument comparisons) of refused, which fail with number."""
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not context:
        raise OSError("seccomp_init failed")
    try:
        for syscall_name, comparisons in refused:
            syscall = lib.seccomp_syscall_resolve_name(syscall_name)
            rules = (ArgCmp * max(1, len(comparisons)))(*comparisons)
            result = lib.seccomp_rule_add_array(context, scmp_act_errno(number), syscall, len(comparisons), rules)
            if result < 0:
                raise OSError(-result, "seccomp_rule_add_array %s: %s" % (syscall_name.decode(), os.strerror(-result)))
        result = lib.seccomp_load(context)  # sets no_new_privs first (libseccomp's default)
        if result < 0:
            raise OSError(-result, "seccomp_load: %s" % os.strerror(-result))
    finally:
        lib.seccomp_release(context)


def prove(number):
    try:
        socket.socket(AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG).close()
    except OSError as exc:
        if exc.errno != number:
            raise
    else:
        raise SystemExit("seccomp_exec: the filter did not refuse NETLINK_SOCK_DIAG")
    socket.socket(AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE).close()


def prove_fork_refused(number):
    try:
        pid = os.fork()
    except OSError as exc:
        if exc.errno != number:
            raise
        return
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    raise SystemExit("seccomp_exec: the filter did not refuse fork")


def main(argv):
    number, refuse = None, "sock_diag"
    while argv[:1] in (["--errno"], ["--refuse"]):
        if argv[0] == "--errno":
            number = getattr(errno, argv[1])
        else:
            refuse = argv[1]
        argv = argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2 or refuse not in ("sock_diag", "fork"):
        raise SystemExit("usage: seccomp_exec.py [--errno NAME] [--refuse sock_diag|fork] -- COMMAND [ARG...]")
    if refuse == "fork":
        number = errno.EAGAIN if number is None else number
        refuse_fork(number)
        prove_fork_refused(number)
    else:
        number = errno.EPERM if number is None else number
        refuse_sock_diag(number)
        prove(number)
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
