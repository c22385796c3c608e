# Copyright: netstate.tcp developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of netstate.tcp.health_report: one fleet report per run, written on the controller.

Documentation lives in plugins/modules/health_report.py; rendering in
plugins/plugin_utils/_health_report.py. Runs once per play (BYPASS_HOST_LOOP) and never
connects to a host.
"""

from __future__ import annotations

import json
import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible_collections.netstate.tcp.plugins.module_utils._engine import _files as files
from ansible_collections.netstate.tcp.plugins.module_utils._engine._escape import bounded_repr
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_report as report_engine
from ansible_collections.netstate.tcp.plugins.plugin_utils import _health_rules as rules_engine
from ansible_collections.netstate.tcp.plugins.plugin_utils._paths import controller_path

ARGUMENT_SPEC = {
    "hosts": {"type": "list", "elements": "str"},
    "merge": {"type": "list", "elements": "path"},
    "result_var": {"type": "str", "default": "netstate_health_result"},
    "dest": {"type": "path", "required": True},
    "formats": {"type": "list", "elements": "str", "default": ["junit", "json", "markdown"],
                "choices": sorted(report_engine.FORMATS)},
    "fail_on": {"type": "str", "default": "critical", "choices": list(rules_engine.SEVERITIES)},
    "rule_names": {"type": "list", "elements": "str", "default": []},
    "title": {"type": "str", "default": "netstate.tcp health"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    BYPASS_HOST_LOOP = True  # one report for the whole play, whatever host runs it
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        self._supports_check_mode = True
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC,
                                                        mutually_exclusive=[("hosts", "merge")],
                                                        required_one_of=[("hosts", "merge")])
        if args["merge"] is not None:
            report = self._merged(args)
        else:
            hostvars = task_vars.get("hostvars") or {}
            registered = {}
            for host in args["hosts"]:
                if host not in hostvars:
                    raise AnsibleActionFail(hosts_error(host))
                registered[host] = hostvars[host].get(args["result_var"])
            report = report_engine.build_report(registered, args["rule_names"], args["fail_on"], args["title"])
        dest = controller_path(args["dest"])
        paths = {name: os.path.join(dest, report_engine.FORMATS[name]) for name in args["formats"]}
        changed = False
        target = dest
        try:
            if not self._task.check_mode:
                os.makedirs(dest, exist_ok=True)
            elif not os.path.isdir(dest):
                changed = True
            with report_engine.locked_directory(None if self._task.check_mode else dest):
                texts = {name: report_engine.RENDERERS[name](report) for name in paths}
                # Measured values and the hosts' snapshots (live socket counts) are refreshed on every run;
                # the report counts as changed only when what it says of the hosts (its verdicts) did.
                before = report_engine.verdicts(_read_json(paths["json"])) if "json" in paths else None
                same_verdicts = before is not None and before == report_engine.verdicts(json.loads(texts["json"]))
                for name, path in paths.items():
                    if changed and self._task.check_mode:
                        continue
                    target = path
                    written = report_engine.write_if_changed(path, texts[name], self._task.check_mode)
                    changed |= written and not same_verdicts
        except OSError as exc:
            # name the report file (not the temporary one beside it) and the system's reason
            raise AnsibleActionFail(f"dest: cannot write {target}: {to_text(exc.strerror or exc)}") from None
        markdown = report_engine.render_markdown(report)
        result.update(
            changed=changed,
            healthy=report["healthy"],
            totals=report["totals"],
            paths=paths,
            markdown=markdown,
            summary_lines=markdown.rstrip("\n").splitlines(),
            hosts={entry["host"]: entry["status"] for entry in report["hosts"]},
        )
        return result

    @staticmethod
    def _merged(args):
        """The report of the partial JSON reports in merge (files, or directories holding health.json)."""
        partials = []
        for given in args["merge"]:
            path = controller_path(given)
            if os.path.isdir(path):
                path = os.path.join(path, report_engine.FORMATS["json"])
            try:
                partials.append((path, json.loads(files.read_text(path, report_engine.REPORT_READ_LIMIT))))
            except OSError as exc:
                raise AnsibleActionFail(f"merge: cannot read {path}: {to_text(exc.strerror or exc)}") from None
            except ValueError as exc:
                raise AnsibleActionFail(f"merge: {path} is not JSON: {exc}") from None
        try:
            return report_engine.merge_reports(partials, args["rule_names"])
        except (report_engine.ReportMergeError, rules_engine.HealthRuleError) as exc:
            raise AnsibleActionFail(to_text(exc)) from None


def hosts_error(host):
    """The refusal of a `hosts` entry the inventory does not have: the name quoted bounded, on one line."""
    return "hosts: %s is not in the inventory" % bounded_repr(host)


def _read_json(path):
    """The file's JSON content, or None when there is none to read or it is not JSON."""
    try:
        return json.loads(files.read_text(path, report_engine.REPORT_READ_LIMIT))
    except (OSError, ValueError):
        return None
