# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""TcpAggregate's two hot loops agree: a receive buffer whose messages all have one length (read by
_consume_uniform, one Struct.iter_unpack) counts exactly as the general loop (_consume_netlink) counts it,
and a buffer that is not uniform (a message of another length or family in it, a header that lies at a
stride position, a trailer that is not NLMSG_DONE) is left to the general loop. Hypothesis builds the
buffers from every field the loops read; the recorded-dump and fuzz tests are in test_netlink.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.netstate.tcp.plugins.module_utils._engine import _aggregate as aggregate

from tests.unit.plugins.module_utils._engine._helpers import diag_message, done_message

LISTEN_PORTS = frozenset([80, 443, 8080, 0x5000, 0x0050])   # 0x5000 is 80 byte-swapped
ATTRS = struct.pack("=HHB3x", 5, 8, 0) + struct.pack("=HHI", 8, 16, 0) + struct.pack("=HHQ", 12, 21, 7) + b"\0" * 4
ADDRESSES = {socket.AF_INET: ["10.0.0.1", "10.0.0.2", "192.0.2.7", "127.0.0.1"],
             socket.AF_INET6: ["::1", "2001:db8::1", "::ffff:10.0.0.1", "fe80::2"]}


@st.composite
def messages(draw, family, attrs=ATTRS):
    state = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]))
    return diag_message(family, state, draw(st.sampled_from(sorted(LISTEN_PORTS) + [1024, 33000, 60999, 65535])),
                        draw(st.sampled_from([0, 80, 443, 5432, 33001])),
                        draw(st.sampled_from(ADDRESSES[family])), draw(st.sampled_from(ADDRESSES[family])),
                        rqueue=draw(st.sampled_from([0, 0, 1, 4096])), wqueue=draw(st.sampled_from([0, 0, 7])),
                        timer=draw(st.integers(0, 4)), retrans=draw(st.sampled_from([0, 0, 1, 3])), attrs=attrs)


def results(tcp):
    return (tcp.states(), tcp.local_ports_bounded(None), tcp.remote_ports(10), tcp.peers(10), tcp.ephemeral(),
            tcp.timer_counts(), tcp.queues(10), tcp.retransmitting(10), dict(tcp.local))


def both(buffers):
    """(results, stops) of consume_netlink (uniform where it can) and of the general loop alone."""
    fast, general = aggregate.TcpAggregate((32768, 60999)), aggregate.TcpAggregate((32768, 60999))
    fast.listen_ports = general.listen_ports = LISTEN_PORTS
    stops = ([fast.consume_netlink(buf, len(buf)) for buf in buffers],
             [general._consume_netlink(buf, len(buf)) for buf in buffers])
    return results(fast), results(general), stops


@given(st.sampled_from([socket.AF_INET, socket.AF_INET6]).flatmap(
    lambda family: st.lists(st.lists(messages(family), min_size=1, max_size=40), min_size=1, max_size=4)),
    st.booleans())
@settings(max_examples=150, deadline=None)
def test_a_uniform_buffer_counts_as_the_general_loop_counts_it(groups, done):
    buffers = [b"".join(group) for group in groups]
    if done:
        buffers[-1] += done_message()
    assert all(aggregate.TcpAggregate((1, 2))._consume_uniform(buf, len(buf)) is not aggregate.NOT_UNIFORM
               for buf in buffers)
    fast, general, (fast_stops, general_stops) = both(buffers)
    assert fast == general
    assert fast_stops == general_stops


@given(st.lists(messages(socket.AF_INET), min_size=2, max_size=30), st.data())
@settings(max_examples=150, deadline=None)
def test_a_buffer_of_mixed_lengths_or_families_is_left_to_the_general_loop(group, data):
    """A TIME_WAIT-like message (no attributes) or an IPv6 one among them: not uniform, and counted right."""
    odd = data.draw(st.sampled_from([messages(socket.AF_INET, attrs=b""), messages(socket.AF_INET6, attrs=b""),
                                     messages(socket.AF_INET6)]))
    group.insert(data.draw(st.integers(1, len(group))), data.draw(odd))
    buf = b"".join(group) + done_message()
    assert aggregate.TcpAggregate((1, 2))._consume_uniform(buf, len(buf)) is aggregate.NOT_UNIFORM
    fast, general, stops = both([buf])
    assert fast == general and stops[0] == stops[1]


def test_a_header_that_lies_at_a_stride_or_a_tail_that_is_not_done_is_not_uniform():
    one = diag_message(socket.AF_INET, 1, 80, 33000, "10.0.0.1", "10.0.0.2", attrs=ATTRS)
    buf = bytearray(one * 4 + done_message())
    tcp = aggregate.TcpAggregate((1, 2))
    assert tcp._consume_uniform(bytes(buf), len(buf)) == 4 * len(one)
    for at, value in ((len(one) * 2 + 4, 3), (len(one) * 3 + 16, socket.AF_INET6), (len(one) + 1, 1)):
        broken = bytearray(buf)
        broken[at] = value
        assert tcp._consume_uniform(bytes(broken), len(broken)) is aggregate.NOT_UNIFORM, at
    tail = bytearray(buf)
    tail[-16] = 2   # NLMSG_ERROR where NLMSG_DONE was
    assert tcp._consume_uniform(bytes(tail), len(tail)) is aggregate.NOT_UNIFORM
    detail = aggregate.TcpAggregate((1, 2), want_sockets=1)
    assert detail._consume_uniform(bytes(buf), len(buf)) is aggregate.NOT_UNIFORM
