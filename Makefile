# netstate.tcp — every target does its own set-up (scripts/setup.sh), so a fresh
# Debian 12 machine needs nothing but `make run` or `make test` as root. `make run` and `make dist`
# install only what they need (python3-venv; ansible-core and jmespath in .venv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.build/collections
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: deps deps-run dist run test test-matrix lint units sanity integration fleet-demo bench bench-fleet bench-scale soak clean

deps:
	@bash scripts/setup.sh

deps-run:
	@bash scripts/setup.sh run

# the collection's tarball, as users install it: ansible-galaxy collection install dist/netstate-tcp-*.tar.gz
dist: deps-run
	$(VENV)/bin/ansible-galaxy collection build --force --output-path dist .

run: deps-run
	@$(PY) scripts/summary.py
	@echo
	@bash scripts/run_health_local.sh

lint: deps
	ruff check plugins tests benchmarks scripts extensions
	pycodestyle --max-line-length 160 --ignore=E402,W503,W504,E741,E203,E701,E704 \
		--exclude=.venv,__pycache__,output plugins tests benchmarks scripts extensions
	ansible-lint --profile production

units: deps
	$(PY) -m pytest tests/unit -q

sanity: deps
	bash scripts/ansible-test.sh sanity

integration: deps
	$(PY) -m pytest tests/integration -q

# lint, then pytest (unit, integration, fleet) in two lanes - the systemd-fleet modules in one of their
# own - beside the ansible-core matrix, whose 2.19 lane is the sanity and units of .venv's release
# (scripts/test.sh)
test: deps lint
	MATRIX_ARGS="$(MATRIX_ARGS)" PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/test.sh

# ansible-core 2.16 to 2.21: sanity, units and a smoke run each (docs/matrix.md, "Tested with")
test-matrix: deps
	$(PY) scripts/matrix.py $(MATRIX_ARGS)

# bench_engine.py's phases: listeners, many_listeners (10,000 listeners), sockets (10k/100k/180k, with the
# collector, node_exporter and orphan-listener rows) and million (~1M sockets, 500k distinct peers); one
# part alone with e.g. BENCH_ARGS="--phases million" or BENCH_ARGS="--phases sockets --sizes 180000".
# The sockets phase runs two socket mixes, each in its own namespace: default (1,000 client addresses) and
# many_peers (9,000 client addresses, 9,000 more in TIME_WAIT); one alone with
# BENCH_ARGS="--phases sockets --mixes many_peers"
bench: deps
	$(PY) benchmarks/bench_engine.py $(BENCH_ARGS)
	$(PY) benchmarks/bench_health.py

fleet-demo: deps
	bash tests/fleet/demo.sh

bench-fleet: deps
	$(PY) benchmarks/bench_fleet.py

# gather and health at 20, 50 and 100 hosts (one /25 fleet) against the naive playbooks, forks
# 10/25/50, controller CPU and memory, and the model fitted to them (docs/performance.md)
bench-scale: deps
	$(PY) benchmarks/bench_scale.py --json .build/bench-scale.json $(SCALE_ARGS)

# 30 minutes: the node_exporter collector every 2 s beside connection churn on a fleet host of its
# own (tests/fleet/soak.py; make test runs a 2-minute version). SOAK_ARGS="--duration 600" etc.
soak: deps
	$(PY) tests/fleet/soak.py --json .build/soak.json $(SOAK_ARGS)

clean:
	rm -rf .build .pytest_cache .ansible dist
