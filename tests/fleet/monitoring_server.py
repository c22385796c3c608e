"""A monitoring host for fleet tests: Zabbix server + frontend on PostgreSQL, Prometheus and Alertmanager; or
an alerting host: Prometheus and Alertmanager alone.

Test-side set-up only (the collection ships agents, the template, the registration role and alert
rules, not servers). Everything comes from the host's own Debian packages through the fleet's mirror
proxy: zabbix-server-pgsql, postgresql, zabbix-frontend-php with apache2 + libapache2-mod-php + php-pgsql,
prometheus and prometheus-alertmanager. The same names on both server generations (the metapackages pick
the release's PostgreSQL and PHP):

    generation   Zabbix     PostgreSQL   PHP   Prometheus   Alertmanager
    debian12     6.0.14     15           8.2   2.42.0       0.25.0
    debian13     7.0.22     17           8.4   2.53.3       0.28.1

Intervals are shortened for tests only: the server's configuration cache syncs every few seconds,
Prometheus scrapes and evaluates every few seconds.

    from monitoring_server import setup_monitoring_host
    info = setup_monitoring_host(fleet, "h01")      # {"zabbix_url", "zabbix_version", "prometheus_url", ...}
    info = setup_alerting_host(fleet, "h01")        # {"prometheus_url", "alertmanager_url", ...}
"""

from __future__ import annotations

import json
import time
import urllib.request

from tests.support.waiting import wait_for

ALERTING_PACKAGES = ("prometheus", "prometheus-alertmanager")
PACKAGES = ("postgresql", "zabbix-server-pgsql", "zabbix-frontend-php", "apache2", "libapache2-mod-php",
            "php-pgsql") + ALERTING_PACKAGES
# what setup_monitoring_host reports of each (dpkg-query's version)
VERSIONS = ("zabbix-server-pgsql", "postgresql", "php-pgsql", "prometheus", "prometheus-alertmanager")
DB_PASSWORD = "netstate-test-db"
ZABBIX_USER = "Admin"
ZABBIX_PASSWORD = "zabbix"   # the default of a fresh Zabbix database (data.sql)
SCRAPE_INTERVAL = "5s"
PROMETHEUS_RULES = "/etc/prometheus/rules/netstate_tcp_alerts.yml"
PROMETHEUS_FILE_SD = "/etc/prometheus/file_sd/netstate_node_exporter.yml"
FRONTEND_CONF = "/etc/zabbix/zabbix.conf.php"   # where Debian's frontend package reads it

_INSTALL = """set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends {packages} >/dev/null
"""

_DATABASE = """set -e
cd /tmp
if ! su postgres -c "psql -tAc \\"select 1 from pg_roles where rolname='zabbix'\\"" | grep -q 1; then
  su postgres -c "psql -q -c \\"create role zabbix login password '{password}'\\""
  su postgres -c "createdb -O zabbix -E Unicode -T template0 zabbix"
  sql=/usr/share/zabbix-server-pgsql
  for part in schema images data; do
    test -f $sql/$part.sql.gz || {{ echo "no $part.sql.gz in $sql: $(ls $sql)" >&2; exit 1; }}
    zcat $sql/$part.sql.gz | su zabbix -s /bin/sh -c "psql -q -d zabbix" >/dev/null
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


def _api(url, method, params, timeout=30):
    """An anonymous call (apiinfo.version): the tests log in through zabbix_utils, which sends the session the
    way the server's version wants it."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json-rpc"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fleet address)
        return json.loads(response.read().decode())


def _install(fleet, host, packages):
    fleet.exec(host, _INSTALL.format(packages=" ".join(packages)), timeout=1200)


def _versions(fleet, host, packages):
    """{package: its installed version} from dpkg (the Debian revision left out)."""
    done = fleet.exec(host, "dpkg-query -W -f '${Package} ${Version}\\n' %s" % " ".join(packages))
    return {name: version.split(":")[-1].split("-")[0].split("+")[0]
            for name, version in (line.split() for line in done.stdout.splitlines() if line.strip())}


def _start_prometheus(fleet, host, config):
    _write(fleet, host, "/etc/prometheus/prometheus.yml", config)
    fleet.exec(host, "mkdir -p /etc/prometheus/rules /etc/prometheus/file_sd && "
                     "touch %s && test -f %s || echo '[]' > %s; systemctl restart prometheus"
               % (PROMETHEUS_RULES, PROMETHEUS_FILE_SD, PROMETHEUS_FILE_SD))
    prometheus_url = "http://%s:9090" % fleet.address(host)
    wait_for("Prometheus answers", lambda: urllib.request.urlopen(  # noqa: S310 (fleet address)
        prometheus_url + "/-/ready", timeout=5).status == 200, 120)
    return prometheus_url, fleet.exec(host, "prometheus --version 2>&1 | head -1").stdout.strip()


def _start_alertmanager(fleet, host):
    fleet.exec(host, "systemctl enable -q prometheus-alertmanager && systemctl restart prometheus-alertmanager")
    alertmanager_url = "http://%s:9093" % fleet.address(host)
    wait_for("Alertmanager answers", lambda: urllib.request.urlopen(  # noqa: S310 (fleet address)
        alertmanager_url + "/-/ready", timeout=5).status == 200, 120)
    return alertmanager_url, fleet.exec(host, "prometheus-alertmanager --version 2>&1 | head -1").stdout.strip()


def setup_alerting_host(fleet, host):
    """Install and start Prometheus, sending its alerts to Alertmanager, and Alertmanager on a systemd host
    (Alertmanager's routes are the collection's to write: playbooks/monitor.yml)."""
    started = time.monotonic()
    _install(fleet, host, ALERTING_PACKAGES)
    prometheus_url, prometheus_version = _start_prometheus(fleet, host, _PROMETHEUS_CONF + _ALERTING)
    alertmanager_url, alertmanager_version = _start_alertmanager(fleet, host)
    return {"host": host, "address": fleet.address(host), "prometheus_url": prometheus_url,
            "prometheus_version": prometheus_version, "alertmanager_url": alertmanager_url,
            "alertmanager_version": alertmanager_version, "setup_s": round(time.monotonic() - started, 1)}


def setup_monitoring_host(fleet, host):
    """Install and start Zabbix server + frontend, Prometheus and Alertmanager (Debian's default routes) on a
    systemd host of either server generation; return how to reach them and what was installed."""
    timings = {}
    started = time.monotonic()
    _install(fleet, host, PACKAGES)
    timings["install_s"] = round(time.monotonic() - started, 1)
    fleet.exec(host, _DATABASE, timeout=600)
    _write(fleet, host, "/etc/zabbix/zabbix_server.conf.d/netstate-fleet.conf", _SERVER_CONF, mode="0640")
    fleet.exec(host, "chgrp zabbix /etc/zabbix/zabbix_server.conf.d/netstate-fleet.conf")
    _write(fleet, host, FRONTEND_CONF, _FRONTEND_CONF, mode="0640")
    fleet.exec(host, "chgrp www-data %s && a2enconf -q zabbix-frontend-php >/dev/null"
                     " && systemctl restart apache2"
                     " && systemctl enable -q zabbix-server && systemctl restart zabbix-server" % FRONTEND_CONF)
    prometheus_url, prometheus_version = _start_prometheus(fleet, host, _PROMETHEUS_CONF + _ALERTING)
    alertmanager_url, alertmanager_version = _start_alertmanager(fleet, host)
    address = fleet.address(host)
    zabbix_url = "http://%s/zabbix" % address
    api = zabbix_url + "/api_jsonrpc.php"
    try:
        version = wait_for("Zabbix API answers", lambda: _api(api, "apiinfo.version", {}).get("result"), 120)
        # the trapper port is opened once the server has checked its database (a refused database stops it)

        def trapper():
            return fleet.exec(host, "ss -H -l -t -n 'sport = :10051'").stdout.strip()
        wait_for("Zabbix server listens on 10051", trapper, 90)
    except AssertionError as error:
        logs = fleet.exec(host, "tail -n 15 /var/log/zabbix/zabbix_server.log /var/log/apache2/error.log",
                          check=False)
        raise AssertionError("%s\n%s%s" % (error, logs.stdout, logs.stderr)) from None
    timings["setup_s"] = round(time.monotonic() - started, 1)
    return {"host": host, "system": fleet.os(host), "address": address, "zabbix_url": zabbix_url,
            "zabbix_api": api, "zabbix_version": version, "zabbix_user": ZABBIX_USER,
            "zabbix_password": ZABBIX_PASSWORD, "prometheus_url": prometheus_url,
            "prometheus_version": prometheus_version, "alertmanager_url": alertmanager_url,
            "alertmanager_version": alertmanager_version, "packages": _versions(fleet, host, VERSIONS),
            "timings": timings}
