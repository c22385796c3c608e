# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make run`: gather connection facts on localhost through Ansible and print a readable summary.

Runs `ansible localhost -m netstate.tcp.connection_facts` (the real module, through Ansible)
and prints the states, the busiest ports and peers, and the listeners with their queues.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gather(args):
    env = dict(os.environ,
               ANSIBLE_COLLECTIONS_PATH=os.path.join(HERE, ".build", "collections"),
               ANSIBLE_CONFIG=os.path.join(HERE, "ansible.cfg"),
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.minimal", ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    cmd = [ansible, "localhost", "-c", "local", "-m", "netstate.tcp.connection_facts", "-a", args]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    # the minimal callback prints "localhost | SUCCESS => {...}"
    try:
        result = json.loads(run.stdout.split("=>", 1)[1])
    except (ValueError, IndexError):
        sys.exit("connection_facts did not run:\n%s%s" % (run.stdout, run.stderr))
    if result.get("failed"):
        sys.exit("connection_facts failed: %s" % result.get("msg"))
    for line in run.stderr.splitlines():
        if "[WARNING]" in line and "inventory" not in line:
            print(line.strip())
    return result["ansible_facts"]["netstate"]


def nonzero(states):
    return ", ".join("%s %d" % (name, count) for name, count in states.items() if count) or "none"


def table(headers, rows):
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = "  ".join("%-*s" % (w, h) for w, h in zip(widths, headers))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join("%-*s" % (w, "-" if v is None else v) for w, v in zip(widths, row)) for row in rows]
    return "\n".join(out)


def main():
    facts = gather("gather_subset=default top=5")
    tcp = facts["tcp"]
    print("netstate on %s (kernel %s, backend %s, %.1f ms)" % (
        os.uname()[1], facts["kernel"], facts["backend"], facts["duration_ms"]))
    print()
    print("TCP sockets: %d  (%s)" % (tcp["total"], nonzero(tcp["states"])))
    print("  ipv4: %d  ipv6: %d   UDP sockets: %d" % (
        tcp["families"]["ipv4"]["total"], tcp["families"]["ipv6"]["total"], facts["udp"]["total"]))
    eph = tcp["ephemeral"]
    busiest = eph["busiest"]
    print("Ephemeral ports %d-%d (%d):" % (eph["range"][0], eph["range"][1], eph["size"]), end=" ")
    if busiest:
        print("busiest destination %s:%d uses %d (%.2f%%, %d in TIME_WAIT)" % (
            busiest["address"], busiest["port"], busiest["connections"], 100 * busiest["share"],
            busiest["time_wait"]))
    else:
        print("no outgoing connection")
    print()
    ports = sorted(tcp["local_ports"].items(), key=lambda kv: -kv[1]["total"])[:5]
    print("Busiest listening ports")
    print(table(["port", "sockets", "states"], [(p, v["total"], nonzero(v["states"])) for p, v in ports]))
    print()
    print("Busiest remote ports (outgoing)")
    print(table(["port", "sockets", "states"],
                [(p, v["total"], nonzero(v["states"]))
                 for p, v in sorted(tcp["remote_ports"].items(), key=lambda kv: -kv[1]["total"])]))
    print()
    print("Top peers")
    peers = [(p["address"], p["total"], nonzero(p["states"])) for p in tcp["peers"]]
    print(table(["address", "sockets", "states"], peers))
    print()
    print("Listeners (queue = accept queue now, backlog = its maximum)")
    print(table(["proto", "address", "port", "queue", "backlog", "conns", "pid", "process", "user"],
                [(i["protocol"], i["address"], i["port"], i["queue"], i["backlog"], i["connections"], i["pid"],
                  i["process"], i["user"]) for i in facts["listeners"]]))
    counters = facts["counters"]
    print()
    max_orphans = counters["sysctl"].get("tcp_max_orphans")
    print("Kernel: ListenOverflows %s, ListenDrops %s, TCPTimeWaitOverflow %s, orphans %s %s" % (
        counters["TcpExt"].get("ListenOverflows"), counters["TcpExt"].get("ListenDrops"),
        counters["TcpExt"].get("TCPTimeWaitOverflow"), counters["sockstat"].get("TCP_orphan"),
        # a global key: a network namespace other than the host's does not show it
        "(tcp_max_orphans not shown in this network namespace)" if max_orphans is None else "of max %s" % max_orphans))


if __name__ == "__main__":
    main()
