#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: peer_block
short_description: Block the peers with the most TCP connections, never the ones that keep the host reachable
version_added: 0.1.0
description:
  - Counts the TCP connections of every remote address on the host (netlink sock_diag, C(/proc/net) as
    fallback; all peers, not a top-N) and blocks each address with more than O(max_connections) in the
    counted O(states), optionally only connections to O(local_port).
  - "By default (O(direction=inbound)) only connections peers made to this host count: those whose local
    address and port are a listener's of the host's network namespace (a listener on C(0.0.0.0) or C(::)
    covers every address of its family, and C(::) the IPv4-mapped ones of a dual-stack socket). The
    host's own connections out, to its database, cache or upstream API, never make that server blocked
    unless O(direction=all)."
  - "C(SYN_RECV) is not counted unless listed in O(states): a SYN with a forged source address creates one
    without any handshake, so anyone could make the host block an address that never connected."
  - "Never blocks: loopback addresses, the host's own addresses, the address of the SSH client the play
    arrived from, and O(allow). Such peers over the threshold are listed in RV(spared) with the reason."
  - The SSH client is read from C(SSH_CONNECTION) / C(SSH_CLIENT) of the module's environment. With
    C(become) (sudo, su) the environment is usually reset, so the module then reads those variables from
    its ancestor processes (the login shell of the SSH session), which root can read. Where neither has
    them (C(connection=local), a container exec) it warns, and only O(allow) protects the controller.
  - "IPv4-mapped IPv6 peers (C(::ffff:192.0.2.1)) count, and are blocked, as their IPv4 address."
  - "nftables: a table of its own, C(inet netstate_tcp), with the sets C(blocked_ipv4) and C(blocked_ipv6)
    (C(flags timeout)) and a chain C(input) (hook input, priority -10) that drops input from their members.
    The rest of the ruleset is never touched; one C(nft -f) transaction applies everything or nothing."
  - "iptables (where nft is missing, or O(backend=iptables)): the ipsets C(netstate_tcp_ipv4) and
    C(netstate_tcp_ipv6) (C(hash:ip), with timeouts), a chain C(NETSTATE_TCP) in iptables and ip6tables
    that drops their members, and one jump to it at the top of C(INPUT)."
  - Input from a blocked address is dropped, so new connections time out and existing ones stall at the
    peer's next segment (it is never acknowledged) until the peer gives up.
  - A peer already blocked is not added again (its timeout is not extended), so a second run under the
    same load reports no change.
author:
  - netstate.tcp contributors (@netstate-tcp)
extends_documentation_fragment:
  - netstate.tcp.attributes
  - netstate.tcp.attributes.LINUX
options:
  max_connections:
    description:
      - A peer with more than this many counted connections is blocked (unless protected).
      - Required with O(state=present).
    type: int
  states:
    description:
      - TCP states counted. Default every state but C(LISTEN) (listeners have no peer) and C(SYN_RECV).
      - "C(SYN_RECV) (a half-open connection, the SYN received and not yet answered by the peer's ACK) is
        spoofable: forged SYNs from an address that never connected create them. List it only where
        every peer has a real source address (behind a proxy that completes handshakes, say), and keep
        it with O(direction=inbound)."
    type: list
    elements: str
    choices: [ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING]
  direction:
    description:
      - V(inbound) counts only the connections to a listening port of this host (peers that connected
        in, matched by the listener's address and port, wildcards included).
      - V(all) counts every connection whatever its direction, so the servers this host connects to
        (its database, say) can be blocked too.
    type: str
    choices: [inbound, all]
    default: inbound
    version_added: 0.1.0
  local_port:
    description:
      - Count only connections whose local port is this one (for example V(443) for the clients of a web
        server). Default every connection.
    type: int
  allow:
    description:
      - "Addresses and networks (IPv4 or IPv6, C(192.0.2.10), C(198.51.100.0/24), C(2001:db8::/32)) that are
        never blocked: load balancers, monitoring, NAT gateways, bastions."
    type: list
    elements: str
    default: []
  duration:
    description:
      - Seconds a block lasts; the firewall removes the address by itself afterwards. V(0) blocks until
        O(state=absent).
    type: int
    default: 3600
  max_blocks:
    description:
      - At most this many new blocks per run, the busiest peers first; the rest are in RV(deferred) and
        named in a warning.
    type: int
    default: 10
  state:
    description:
      - V(present) counts and blocks; V(absent) removes every block (the nftables table, or the ipsets and
        the iptables chain and jump). With O(backend=auto), V(absent) cleans up both backends where present.
    type: str
    choices: [present, absent]
    default: present
  backend:
    description:
      - V(auto) uses nftables when C(nft) is installed, else iptables and ipset.
    type: str
    choices: [auto, nftables, iptables]
    default: auto
attributes:
  check_mode:
    support: full
    details:
      - Counts and reports what would be blocked in RV(blocked); the firewall is not touched.
  diff_mode:
    support: full
    details:
      - The blocked addresses before and after.
notes:
  - "The iptables backend applies in several commands: if one fails, the ones already applied in that run
    are taken back, newest first, and the error says what was taken back, or names what could not be
    (O(state=absent) removes it). nftables applies one transaction, so a failure changes nothing."
  - Needs root (or C(CAP_NET_ADMIN)) and the C(ip) command (iproute2), which lists the host's own addresses.
  - Run it with C(become) through SSH rather than C(connection=local), so the controller's address is known.
  - The threshold counts sockets on this host only; addresses behind one NAT gateway count as one peer, so
    put such gateways in O(allow).
seealso:
  - module: netstate.tcp.connection_facts
  - name: nftables sets
    description: Timed sets in nftables.
    link: https://wiki.nftables.org/wiki-nftables/index.php/Sets
"""

EXAMPLES = r"""
- name: Block every peer with more than 200 connections to the web server for ten minutes
  netstate.tcp.peer_block:
    max_connections: 200
    local_port: 443
    states: [ESTABLISHED]
    duration: 600
    allow:
      - 10.0.0.0/24        # load balancers
      - 192.0.2.15         # monitoring
  become: true

- name: Show who would be blocked, change nothing
  netstate.tcp.peer_block:
    max_connections: 500
  check_mode: true
  diff: true

- name: Remove every block
  netstate.tcp.peer_block:
    state: absent
  become: true
"""

RETURN = r"""
blocked:
  description: The addresses this run blocked (in check mode, would block), busiest first.
  returned: always
  type: list
  elements: dict
  contains:
    address: {description: The peer address (IPv4-mapped IPv6 as IPv4)., type: str, sample: 198.51.100.7}
    connections: {description: Its counted connections., type: int, sample: 412}
active:
  description:
    - Every address blocked now (in check mode, after the blocks that would be added), with the seconds
      left (V(null) until removed). Empty after O(state=absent).
  returned: always
  type: list
  elements: dict
  contains:
    address: {description: The blocked address., type: str, sample: 198.51.100.7}
    expires_in:
      description: Seconds until the block ends, V(null) for none.
      type: int
      sample: 599
spared:
  description: Peers over the threshold that are protected and not blocked, with the reason.
  returned: always
  type: list
  elements: dict
  contains:
    address: {description: The peer address., type: str, sample: 192.0.2.15}
    connections: {description: Its counted connections., type: int, sample: 880}
    reason:
      description: Why it is not blocked.
      type: str
      sample: allow
      choices: [loopback, own_address, ssh_client, allow]
deferred:
  description: Peers over the threshold not blocked in this run because of O(max_blocks).
  returned: always
  type: list
  elements: dict
  sample: [{address: 203.0.113.9, connections: 210}]
removed:
  description: With O(state=absent), the addresses that were blocked before.
  returned: when O(state=absent)
  type: list
  elements: dict
  sample: [{address: 198.51.100.7, expires_in: 312}]
backend:
  description: The firewall used (V(nftables) or V(iptables)); with O(state=absent) the ones cleaned, or V(null).
  returned: always
  type: str
  sample: nftables
ssh_client:
  description: The SSH client address protected, and where it was found (V(null) when none was).
  returned: always
  type: dict
  sample: {address: 192.0.2.50, source: SSH_CONNECTION of process 812}
counted:
  description: What was counted (V(null) with O(state=absent)).
  returned: always
  type: dict
  sample: {peers: 14, connections: 1630, engine: netlink, states: [ESTABLISHED], local_port: 443, direction: inbound}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.netstate.tcp.plugins.module_utils._exit import exit_change
from ansible_collections.netstate.tcp.plugins.module_utils._peer_block import (
    BACKENDS,
    DEFAULT_DIRECTION,
    DIRECTIONS,
    STATES,
    PeerBlockError,
)
from ansible_collections.netstate.tcp.plugins.module_utils._peer_block import run as peer_block


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            max_connections=dict(type="int"),
            states=dict(type="list", elements="str", choices=list(STATES)),
            direction=dict(type="str", choices=list(DIRECTIONS), default=DEFAULT_DIRECTION),
            local_port=dict(type="int"),
            allow=dict(type="list", elements="str", default=[]),
            duration=dict(type="int", default=3600),
            max_blocks=dict(type="int", default=10),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            backend=dict(type="str", choices=list(BACKENDS), default="auto"),
        ),
        required_if=[("state", "present", ("max_connections",))],
        supports_check_mode=True,
    )

    def run_command(argv, data=None):
        return module.run_command(argv, data=data, check_rc=False)

    def which(name):
        return module.get_bin_path(name)

    exit_change(module, lambda: peer_block(module.params, run_command, which, check_mode=module.check_mode),
                PeerBlockError)


if __name__ == "__main__":
    main()
