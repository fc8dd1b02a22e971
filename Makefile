# lbrp: install the lab's system packages and the venv, run tests, lint, demo.
# Needs root (apt, OVS, network namespaces). No systemd: OVS is started with ovs-ctl.

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST := $(VENV)/bin/pytest
RUFF := $(VENV)/bin/ruff
APT_PACKAGES := openvswitch-switch mininet ethtool iperf3 hping3 python3-venv iputils-ping iproute2 procps tcpdump
OVS_CTL := /usr/share/openvswitch/scripts/ovs-ctl
# re-run `pip install -e` when the packaging files change
PKG_FILES := $(wildcard setup.cfg setup.py pyproject.toml)
STAMP := $(VENV)/.lbrp-installed

.PHONY: install apt-packages ovs test unit integration lint demo

install: apt-packages $(STAMP) ovs

# apt-get update / install only when a package is missing (idempotent, offline-safe)
apt-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -qx 'install ok installed' \
	    || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make install: installing$$missing"; \
	  apt-get update && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y $(APT_PACKAGES); \
	fi

$(PYTHON):
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

$(STAMP): $(PYTHON) $(PKG_FILES)
	$(PIP) install -q -e '.[test,demo]'
	@touch $@

ovs:
	@if ! $(OVS_CTL) status >/dev/null 2>&1 || ! ovs-vsctl --timeout=5 show >/dev/null 2>&1; then \
	  echo "make install: starting Open vSwitch"; \
	  $(OVS_CTL) start --system-id=random; \
	fi
	@ovs-vsctl --timeout=10 show >/dev/null

# pytest exit code 5 = no tests collected: a failure here
test: install lint
	@rc=0; $(PYTEST) -q tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; \
	exit $$rc

unit: $(STAMP)
	@rc=0; $(PYTEST) -q tests/unit || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make unit: no tests were collected" >&2; exit 1; fi; \
	exit $$rc

integration: install
	$(PYTEST) -q -m integration tests

lint: $(STAMP)
	$(RUFF) check .

demo: install
	$(PYTHON) examples/demo.py
