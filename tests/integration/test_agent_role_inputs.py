# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The agent roles refuse a value that would write outside the line or the path it names.

Their settings end up in a shell command line (the collector's directory and Python), a systemd
unit, the Zabbix agent's configuration (one `Name=value` per line) or the frontend's API. A
trailing newline passed the roles' checks (`$` matches before it) and a newline inside an
`netstate_zabbix_agent_extra_config` value wrote a line of its own, a UserParameter for example.

Each case runs the real role with ansible-playbook against localhost in check mode; the play must
fail at the role's first own task (its checks), naming the variable, before any other task ran.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(BIN, "ansible-playbook")
CHECK_TASK = "Check the settings no argument spec can express"
PSK = "0123456789abcdef" * 2

REGISTER = {"netstate_zabbix_register_url": "http://198.18.0.1/zabbix", "netstate_zabbix_register_token": "t",
            "netstate_zabbix_register_address": "198.18.0.2"}
EDA_URL = "http://198.18.0.3:5000/zabbix"
EDA_TOKEN = "a-token with\nUserParameter=x"   # refused, and never shown

CASES = [
    ("zabbix_agent", "netstate_zabbix_agent_collector_dir", "/usr/local/lib/netstate\n", {}),
    ("zabbix_agent", "netstate_zabbix_agent_python", "/usr/bin/python3\n", {}),
    ("zabbix_agent", "netstate_zabbix_agent_hostname", "web1\n", {}),
    ("zabbix_agent", "netstate_zabbix_agent_tls_psk_identity", "netstate\n",
     {"netstate_zabbix_agent_tls_psk": PSK}),
    ("zabbix_agent", "netstate_zabbix_agent_server", ["127.0.0.1\n"], {}),
    ("zabbix_agent", "netstate_zabbix_agent_extra_config",
     {"DebugLevel": "3\nUserParameter=netstate.pwned[*],touch /tmp/netstate-pwned"}, {}),
    ("zabbix_agent", "netstate_zabbix_agent_extra_config", {"DebugLevel\nUserParameter": "x"}, {}),
    ("zabbix_agent", "netstate_zabbix_agent_extra_config", {"Debug Level": "3"}, {}),
    ("zabbix_agent", "netstate_zabbix_agent_extra_config", {"DebugLevel": "3\r"}, {}),
    ("node_exporter", "netstate_node_exporter_collector_dir", "/usr/local/lib/netstate\n", {}),
    ("node_exporter", "netstate_node_exporter_textfile_dir", "/var/lib/prometheus/node-exporter\n", {}),
    ("node_exporter", "netstate_node_exporter_textfile_name", "netstate_tcp.prom\n", {}),
    ("node_exporter", "netstate_node_exporter_listen_address", "127.0.0.1:9100\n", {}),
    ("node_exporter", "netstate_node_exporter_collector_user", "nobody\n", {}),
    ("zabbix_register", "netstate_zabbix_register_host", "web1\n",
     {"netstate_zabbix_register_url": "http://198.18.0.1/zabbix", "netstate_zabbix_register_token": "t",
      "netstate_zabbix_register_address": "198.18.0.2"}),
    ("zabbix_register", "netstate_zabbix_register_address", "198.18.0.2\n",
     {"netstate_zabbix_register_url": "http://198.18.0.1/zabbix", "netstate_zabbix_register_token": "t"}),
    ("zabbix_register", "netstate_zabbix_register_url", "http://198.18.0.1/zabbix\n",
     {"netstate_zabbix_register_token": "t", "netstate_zabbix_register_address": "198.18.0.2"}),
    ("zabbix_register", "netstate_zabbix_register_eda_url", "http://198.18.0.3:5000/zabbix\n",
     dict(REGISTER, netstate_zabbix_register_eda_token="t", netstate_zabbix_register_eda_user="Admin")),
    ("zabbix_register", "netstate_zabbix_register_eda_token", EDA_TOKEN,
     dict(REGISTER, netstate_zabbix_register_eda_url=EDA_URL, netstate_zabbix_register_eda_user="Admin")),
    ("zabbix_register", "netstate_zabbix_register_eda_user", "Admin\n",
     dict(REGISTER, netstate_zabbix_register_eda_url=EDA_URL, netstate_zabbix_register_eda_token="t")),
]


def run_role(tmp_path, role, variables):
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  roles:\n    - role: netstate.tcp.%s\n" % role)
    extra = tmp_path / "vars.json"  # JSON keeps the newlines and control characters of the values
    extra.write_text(json.dumps(variables))
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    return subprocess.run([PLAYBOOK, "--check", "-c", "local", "-i", "localhost,", str(playbook),
                           "-e", "@" + str(extra), "-e", "ansible_python_interpreter=" + sys.executable],
                          capture_output=True, text=True, timeout=300, env=env, check=False)


@pytest.mark.parametrize("role,name,value,others", CASES,
                         ids=["%s-%s-%d" % (case[0], case[1].split("_", 3)[-1], n) for n, case in enumerate(CASES)])
def test_a_value_leaving_its_line_or_path_is_refused_before_any_task(tmp_path, role, name, value, others):
    done = run_role(tmp_path, role, dict(others, **{name: value}))
    output = done.stdout
    assert done.returncode != 0, output[-3000:]
    tasks = [line for line in output.splitlines() if line.startswith("TASK [")]
    assert tasks and CHECK_TASK in tasks[-1], tasks  # nothing after the role's checks ran
    failed = [line for line in output.splitlines() if line.startswith("failed: [localhost] (item=")]
    assert len(failed) == 1, output[-3000:]
    assert failed[0].startswith("failed: [localhost] (item=%s) => " % name), failed
    result = json.loads(failed[0].split(" => ", 1)[1])
    assert result["msg"].startswith(name + ": "), result["msg"]
    if name == "netstate_zabbix_register_eda_token":
        assert "a-token" not in output and "UserParameter=x" not in output, "the refused token was shown"
