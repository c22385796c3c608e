"""A monitoring host for fleet tests: Zabbix server + frontend on PostgreSQL, and Prometheus; or an alerting
host: Prometheus and Alertmanager alone.

Test-side set-up only (the collection ships agents, the template, the registration role and alert
rules, not servers). Everything comes from Debian 12's own packages through the fleet's mirror proxy:
zabbix-server-pgsql, postgresql, zabbix-frontend-php with apache2 + libapache2-mod-php + php-pgsql, and
prometheus. Intervals are shortened for tests only: the server's configuration cache syncs every
few seconds, Prometheus scrapes and evaluates every few seconds.

    from monitoring_server import setup_monitoring_host
    info = setup_monitoring_host(fleet, "h01")      # {"zabbix_url", "zabbix_version", "prometheus_url", ...}
    info = setup_alerting_host(fleet, "h01")        # {"prometheus_url", "alertmanager_url", ...}
"""

from __future__ import annotations

import json
import time
import urllib.request

from tests.support.waiting import wait_for

PACKAGES = ("postgresql", "zabbix-server-pgsql", "zabbix-frontend-php", "apache2", "libapache2-mod-php",
            "php-pgsql", "prometheus")
DB_PASSWORD = "netstate-test-db"
ZABBIX_USER = "Admin"
ZABBIX_PASSWORD = "zabbix"   # the default of a fresh Zabbix database (data.sql)
SCRAPE_INTERVAL = "5s"
PROMETHEUS_RULES = "/etc/prometheus/rules/netstate_tcp_alerts.yml"
PROMETHEUS_FILE_SD = "/etc/prometheus/file_sd/netstate_node_exporter.yml"

_INSTALL = """set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends {packages} >/dev/null
""".format(packages=" ".join(PACKAGES))

_DATABASE = """set -e
cd /tmp
if ! su postgres -c "psql -tAc \\"select 1 from pg_roles where rolname='zabbix'\\"" | grep -q 1; then
  su postgres -c "psql -q -c \\"create role zabbix login password '{password}'\\""
  su postgres -c "createdb -O zabbix -E Unicode -T template0 zabbix"
  for part in schema images data; do
    zcat /usr/share/zabbix-server-pgsql/$part.sql.gz | su zabbix -s /bin/sh -c "psql -q -d zabbix" >/dev/null
  done
fi
""".format(password=DB_PASSWORD)

_SERVER_CONF = """# fleet tests: pick up new hosts and items within seconds
DBPassword={password}
CacheUpdateFrequency=5
Timeout=10
StartPollers=5
StartDiscoverers=1
""".format(password=DB_PASSWORD)

_FRONTEND_CONF = """<?php
$DB['TYPE'] = 'POSTGRESQL';
$DB['SERVER'] = '127.0.0.1';
$DB['PORT'] = '5432';
$DB['DATABASE'] = 'zabbix';
$DB['USER'] = 'zabbix';
$DB['PASSWORD'] = '{password}';
$DB['SCHEMA'] = '';
$DB['ENCRYPTION'] = false;
$DB['KEY_FILE'] = '';
$DB['CERT_FILE'] = '';
$DB['CA_FILE'] = '';
$DB['VERIFY_HOST'] = false;
$DB['CIPHER_LIST'] = '';
$DB['VAULT_URL'] = '';
$DB['VAULT_DB_PATH'] = '';
$DB['VAULT_TOKEN'] = '';
$DB['DOUBLE_IEEE754'] = true;
$ZBX_SERVER = '127.0.0.1';
$ZBX_SERVER_PORT = '10051';
$ZBX_SERVER_NAME = 'netstate fleet';
$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
""".format(password=DB_PASSWORD)

_PROMETHEUS_CONF = """# fleet tests: short intervals
global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
rule_files:
  - {rules}
scrape_configs:
  - job_name: node
    file_sd_configs:
      - files: [{file_sd}]
        refresh_interval: 5s
""".format(interval=SCRAPE_INTERVAL, rules=PROMETHEUS_RULES, file_sd=PROMETHEUS_FILE_SD)

ALERTING_PACKAGES = ("prometheus", "prometheus-alertmanager")
_ALERTING = """alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:9093"]
"""


def _write(fleet, host, path, text, mode="0644"):
    import base64  # pylint: disable=import-outside-toplevel
    data = base64.b64encode(text.encode("utf-8")).decode("ascii")
    fleet.exec(host, "mkdir -p \"$(dirname {0})\" && echo {1} | base64 -d > {0} && chmod {2} {0}".format(
        path, data, mode))


def _api(url, method, params, auth=None, timeout=30):
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    if auth:
        body["auth"] = auth
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json-rpc"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fleet address)
        return json.loads(response.read().decode())


def _start_prometheus(fleet, host, config):
    _write(fleet, host, "/etc/prometheus/prometheus.yml", config)
    fleet.exec(host, "mkdir -p /etc/prometheus/rules /etc/prometheus/file_sd && "
                     "touch %s && test -f %s || echo '[]' > %s; systemctl restart prometheus"
               % (PROMETHEUS_RULES, PROMETHEUS_FILE_SD, PROMETHEUS_FILE_SD))
    prometheus_url = "http://%s:9090" % fleet.address(host)
    wait_for("Prometheus answers", lambda: urllib.request.urlopen(  # noqa: S310 (fleet address)
        prometheus_url + "/-/ready", timeout=5).status == 200, 120)
    return prometheus_url, fleet.exec(host, "prometheus --version 2>&1 | head -1").stdout.strip()


def setup_alerting_host(fleet, host):
    """Install and start Prometheus, sending its alerts to Alertmanager, and Alertmanager on a systemd host
    (Alertmanager's routes are the collection's to write: playbooks/monitor.yml)."""
    started = time.monotonic()
    fleet.exec(host, "set -e\nexport DEBIAN_FRONTEND=noninteractive\napt-get update -q >/dev/null\n"
                     "apt-get install -y -q --no-install-recommends %s >/dev/null" % " ".join(ALERTING_PACKAGES),
               timeout=1200)
    prometheus_url, prometheus_version = _start_prometheus(fleet, host, _PROMETHEUS_CONF + _ALERTING)
    fleet.exec(host, "systemctl enable -q prometheus-alertmanager && systemctl restart prometheus-alertmanager")
    alertmanager_url = "http://%s:9093" % fleet.address(host)
    wait_for("Alertmanager answers", lambda: urllib.request.urlopen(  # noqa: S310 (fleet address)
        alertmanager_url + "/-/ready", timeout=5).status == 200, 120)
    alertmanager_version = fleet.exec(host, "prometheus-alertmanager --version 2>&1 | head -1").stdout.strip()
    return {"host": host, "address": fleet.address(host), "prometheus_url": prometheus_url,
            "prometheus_version": prometheus_version, "alertmanager_url": alertmanager_url,
            "alertmanager_version": alertmanager_version, "setup_s": round(time.monotonic() - started, 1)}


def setup_monitoring_host(fleet, host):
    """Install and start Zabbix server + frontend and Prometheus on a systemd host; return how to reach them."""
    timings = {}
    started = time.monotonic()
    fleet.exec(host, _INSTALL, timeout=1200)
    timings["install_s"] = round(time.monotonic() - started, 1)
    fleet.exec(host, _DATABASE, timeout=600)
    _write(fleet, host, "/etc/zabbix/zabbix_server.conf.d/netstate-fleet.conf", _SERVER_CONF, mode="0640")
    fleet.exec(host, "chgrp zabbix /etc/zabbix/zabbix_server.conf.d/netstate-fleet.conf")
    _write(fleet, host, "/etc/zabbix/zabbix.conf.php", _FRONTEND_CONF, mode="0640")
    fleet.exec(host, "chgrp www-data /etc/zabbix/zabbix.conf.php && a2enconf -q zabbix-frontend-php >/dev/null"
                     " && systemctl restart apache2"
                     " && systemctl enable -q zabbix-server && systemctl restart zabbix-server")
    prometheus_url, prometheus_version = _start_prometheus(fleet, host, _PROMETHEUS_CONF)
    address = fleet.address(host)
    zabbix_url = "http://%s/zabbix" % address
    api = zabbix_url + "/api_jsonrpc.php"
    version = wait_for("Zabbix API answers", lambda: _api(api, "apiinfo.version", {}).get("result"), 120)
    wait_for("Zabbix server runs", lambda: "active" == fleet.exec(
        host, "systemctl is-active zabbix-server", check=False).stdout.strip(), 60)
    timings["setup_s"] = round(time.monotonic() - started, 1)
    return {"host": host, "address": address, "zabbix_url": zabbix_url, "zabbix_api": api,
            "zabbix_version": version, "zabbix_user": ZABBIX_USER, "zabbix_password": ZABBIX_PASSWORD,
            "prometheus_url": prometheus_url, "prometheus_version": prometheus_version, "timings": timings}
