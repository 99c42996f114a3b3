# zeusd developer entry points. Each target creates what it needs on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
DEMO_SOCKET ?= /tmp/zeusd-demo/zeusd.sock

.PHONY: venv compat-clients demo demo-tcp demo-args demo-tcp-args test test-oldest bench deb e2e clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

## Released Zeus clients (zeus 0.16, 0.15, zeus-ml 0.11), for tests/compat; pinned, idempotent.
compat-clients: venv
	$(PY) tests/compat/install_clients.py

## The demo's daemon flags, in one place: `make demo` runs them and tests/daemon/test_readme_examples.py
## reads them back (`make -s demo-args`), so the README's examples are checked against this exact setup.
DEMO_POLICY ?= $(CURDIR)/policy/demo-policy.toml
DEMO_LEASES ?= /tmp/zeusd-demo-leases-$(shell id -u)
DEMO_ARGS = --gpu-backend simulated --simulated-gpus h200x4 --cpu-backend simulated --simulated-cpus 2 \
	--policy $(DEMO_POLICY) --lease-dir $(DEMO_LEASES) --enable gpu-control,gpu-read,cpu-read,metrics
DEMO_TCP_ARGS = --mode tcp --tcp-bind-address 127.0.0.1:4938 --signing-key-path $(DEMO_KEY)
DEMO_KEY ?= /tmp/zeusd-demo/signing.key

## Run the daemon on 4 simulated H200s and 2 simulated CPUs (no NVIDIA driver, no RAPL); Ctrl-C stops it.
demo: venv
	@echo "zeusd on $(DEMO_SOCKET); try:"
	@echo "  $(VENV)/bin/zeusctl --socket $(DEMO_SOCKET) status"
	@echo "  curl --unix-socket $(DEMO_SOCKET) http://localhost/discover"
	@echo "  curl --unix-socket $(DEMO_SOCKET) -X POST 'http://localhost/gpu/set_power_limit?gpu_ids=0&power_limit_mw=300000&block=true'"
	@echo "  curl --unix-socket $(DEMO_SOCKET) 'http://localhost/cpu/get_cumulative_energy?cpu=true&dram=true'"
	@echo "  curl --unix-socket $(DEMO_SOCKET) http://localhost/metrics"
	$(VENV)/bin/zeusd serve $(DEMO_ARGS) --socket-path $(DEMO_SOCKET)

## The same demo on TCP 127.0.0.1:4938 with bearer tokens (a fresh signing key in $(DEMO_KEY)).
demo-tcp: venv
	mkdir -p $(dir $(DEMO_KEY)) && umask 077 && head -c 32 /dev/urandom > $(DEMO_KEY)
	@echo "TOKEN=\$$($(VENV)/bin/zeusd token issue --signing-key-path $(DEMO_KEY) --user $$USER --scope gpu-control,gpu-read,cpu-read --expires 1d)"
	$(VENV)/bin/zeusd serve $(DEMO_ARGS) $(DEMO_TCP_ARGS)

demo-args:
	@echo $(DEMO_ARGS)

demo-tcp-args:
	@echo $(DEMO_TCP_ARGS)

## All tests that need no container: unit, real daemon processes, transport.
test: venv compat-clients
	$(PY) -m pytest -q tests --ignore=tests/e2e

## The same suite on the oldest supported stack: Debian 12's Falcon 3.1 and waitress 2.1.
$(VENV)-oldest/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)-oldest
	$(VENV)-oldest/bin/python -m pip install -q 'falcon==3.1.1' 'waitress==2.1.2' 'PyJWT==2.6.0' \
	    'prometheus_client==0.16.0' 'nvidia-ml-py' 'pytest>=7' 'hypothesis>=6'
	$(VENV)-oldest/bin/python -m pip install -q --no-deps -e .
	touch $@

test-oldest: $(VENV)-oldest/.installed compat-clients
	$(VENV)-oldest/bin/python -m pytest -q tests --ignore=tests/e2e

## The packaged daemon in a booted Debian 12 systemd container (root; run .ci/e2e-deps.sh once).
e2e:
	sh tests/e2e/run.sh

## Latency/throughput and server CPU per request against a bare waitress+Falcon app, the cost of a 50-rule policy, and how
## soon a SIGKILLed owner's leases are restored.
bench: venv
	$(PY) bench/bench_api.py --policy-rules 50 --rounds 5
	$(PY) bench/bench_server_cpu.py
	$(PY) bench/request_phases.py
	$(PY) bench/gc_pauses.py
	$(PY) bench/bench_api.py --energy --rounds 5
	$(PY) bench/bench_energy.py
	$(PY) bench/bench_policy.py --rules 50
	$(PY) bench/bench_leases.py --kills 100 --knobs 2
	$(PY) bench/bench_daemon_leases.py --kills 100

deb:
	bash packaging/build-deb.sh

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
