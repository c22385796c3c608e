"""Forged TCP SYNs for the peer_block tests: half-open connections from an address that never connects.

    spoofed_syn.py SOURCE DESTINATION PORT COUNT

Sends COUNT SYNs (source ports 40000 onwards) from SOURCE, an IPv4 address this namespace does not
have, to DESTINATION:PORT through a raw socket that writes its own IP header (IP_HDRINCL, root only).
The SYN-ACKs go to SOURCE, where nobody answers them, so the listener keeps COUNT SYN_RECV request
sockets until it gives up retransmitting. Run it only inside a private network namespace, with SOURCE
from the test range (198.18.0.0/24). Standard library only.
"""

import socket
import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def syn(source, destination, source_port, port, sequence):
    src, dst = socket.inet_aton(source), socket.inet_aton(destination)
    # TCP header: ports, sequence, ack 0, data offset 5 words, SYN, window, checksum, urgent pointer
    header = struct.pack("!HHIIBBHHH", source_port, port, sequence, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header))
    header = header[:16] + struct.pack("!H", checksum(pseudo + header)) + header[18:]
    # IPv4 header (the kernel fills in the checksum and, being 0, the identification)
    ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(header), 0, 0x4000, 64, socket.IPPROTO_TCP, 0,
                            src, dst)
    return ip_header + header


def main(source, destination, port, count):
    sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    for number in range(count):
        sender.sendto(syn(source, destination, 40000 + number, port, 0x10000 * (number + 1)), (destination, 0))
    sender.close()
    print("SENT %d" % count, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
