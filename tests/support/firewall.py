# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The firewall as its own tools list it: the oracle of what peer_block put in place.

Nothing here imports the collection; the text comes from `nft -j list table ...` and `ipset list NAME`.
"""

import json


def nft_set_members(listing):
    """Every element of every set in an `nft -j list table` listing (JSON text)."""
    members = set()
    for item in json.loads(listing)["nftables"]:
        for element in item.get("set", {}).get("elem", []):
            # a timed element is {"elem": {"val": ADDRESS, "timeout": ...}}, a plain one the address
            members.add(element["elem"]["val"] if isinstance(element, dict) else element)
    return members


def ipset_members(listing):
    """The members of one set in `ipset list NAME` text."""
    return {line.split()[0] for line in listing.split("Members:", 1)[1].splitlines() if line.strip()}
