# -*- coding: utf-8 -*-
# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The checks of gather()'s options, shared with the collector's argparse types and the modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from . import _escape as escape
from ._argspec import DEFAULT_SUBSET, RANGES, SUBSET_GROUPS, SUBSETS, range_text


class GatherError(Exception):
    """Facts could not be gathered; the message names the option, value or file involved."""


def resolve_subset(requested):
    """Turn gather_subset (like setup's: names, 'all', '!name') into a sorted list of names."""
    if requested is None:
        return sorted(DEFAULT_SUBSET)
    if isinstance(requested, str):
        requested = [part.strip() for part in requested.split(",") if part.strip()]
    if not isinstance(requested, (list, tuple)):
        raise GatherError("gather_subset: %s is not a list of subset names" % escape.bounded_repr(requested))
    chosen = set()
    excluded = set()
    only_negations = True
    for item in requested:
        if not isinstance(item, str):
            raise GatherError("gather_subset: %s is not a subset name" % escape.bounded_repr(item))
        negate = item.startswith("!")
        name = item[1:] if negate else item
        if name in SUBSET_GROUPS:
            names = set(SUBSET_GROUPS[name])
        elif name in SUBSETS:
            names = {name}
        else:
            raise GatherError("gather_subset: unknown subset %s (choose from %s, or !name)"
                              % (escape.bounded_repr(item), ", ".join(tuple(SUBSET_GROUPS) + SUBSETS)))
        if negate:
            excluded |= names
        else:
            only_negations = False
            chosen |= names
    if only_negations:
        chosen = set(DEFAULT_SUBSET)
    chosen -= excluded
    chosen.add("states")
    return sorted(chosen)


def check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise GatherError("%s: %s is not an integer" % (name, escape.bounded_repr(value)))
    if value < low or (high is not None and value > high):
        raise GatherError("%s: %s is out of range (%s)" % (name, escape.bounded_repr(value), range_text(low, high)))
    return value


# The checks of the numeric options of RANGES, the one validation gather(), the modules (through it) and
# the collector's argparse types share.

def check_count(name, value):
    """value, an integer within RANGES[name]; GatherError naming the option otherwise."""
    return check_int(name, value, *RANGES[name])


def check_seconds(name, value):
    """value, a number of seconds within RANGES[name] (NaN is not); GatherError naming the option otherwise."""
    low, high = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise GatherError("%s: %s must be a number of seconds from %d to %d"
                          % (name, escape.bounded_repr(value), low, high))
    return value


#: The namespace option's grammar, the one the modules and the collector's --namespace share: host
#: (or self), all, pid:N, a name under /run/netns as `ip netns` makes them, or an absolute path
#: with no "." or ".." component. What a name or path opens is checked again when it is entered:
#: it must be a namespace file (nsfs), never a FIFO or an ordinary file (_files.open_namespace).
NAMESPACE_RE = re.compile(r"(host|self|all|pid:[1-9][0-9]{0,9}|[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
                          r"|/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,31})")  # fullmatch: "$" admits a final newline
NAMESPACE_CHOICES = "host, all, pid:N, a name under /run/netns or an absolute path"


def check_namespace(namespace):
    """The namespace option as given, or GatherError naming it when it is outside the grammar."""
    if namespace is None or namespace == "":
        return namespace
    if not isinstance(namespace, str):
        raise GatherError("namespace: %s is not a string" % escape.bounded_repr(namespace))
    if (not NAMESPACE_RE.fullmatch(namespace) or len(namespace) > 4096
            or any(part in (".", "..") for part in namespace.split("/")[1:])):
        if namespace.startswith("pid:"):
            raise GatherError("namespace: %s: expected pid:<number>" % escape.bounded_repr(namespace))
        raise GatherError("namespace: %s is not a namespace name (%s)"
                          % (escape.bounded_repr(namespace), NAMESPACE_CHOICES))
    return namespace


def resolve_namespace(namespace, run_netns="/run/netns", proc="/proc"):
    """Map the namespace option to (label, path); (None, None) for our own namespace."""
    check_namespace(namespace)
    if namespace in (None, "", "host", "self"):
        return None, None
    if namespace.startswith("pid:"):
        path = os.path.join(proc, namespace[4:], "ns/net")
    elif namespace.startswith("/"):
        path = namespace
    else:
        path = os.path.join(run_netns, namespace)
    if not os.path.lexists(path):
        raise GatherError("namespace: %r not found (%s does not exist)" % (namespace, path))
    return namespace, path
