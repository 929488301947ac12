# Two commands for a newcomer: `make demo` and `make test`. Each creates .venv and installs
# what it needs; every version is pinned in pyproject.toml.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama-cpp-python has no binary wheel: we build it once with explicit CPU flags (the native
# build segfaults on AMX CPUs, see docs/models.md) and keep the wheel here, because pip's own
# wheel cache ignores CMAKE_ARGS and could hand back a native build. AVX-512 (with VNNI, VBMI,
# BF16) is on when this CPU has all of it (prefill 1.5x faster than AVX2 on Intel, 1.35x on AMD
# EPYC), AVX-VNNI (256-bit, which AMD's Zen 4 lacks) only where the CPU lists it, AMX always off.
AVX512_FLAGS := avx512f avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16
cpu_has = $(shell ok=ON; for x in $(1); do \
  grep -qw "$$x" /proc/cpuinfo 2>/dev/null || ok=OFF; done; echo $$ok)
LLAMA_AVX512 := $(call cpu_has,$(AVX512_FLAGS))
LLAMA_AVX_VNNI := $(call cpu_has,avx_vnni)
WHEELS ?= $(HOME)/.cache/rewatch-kit/wheels/avx512-$(LLAMA_AVX512)-avxvnni-$(LLAMA_AVX_VNNI)
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512=$(LLAMA_AVX512) -DGGML_AVX512_VBMI=$(LLAMA_AVX512) \
  -DGGML_AVX512_VNNI=$(LLAMA_AVX512) -DGGML_AVX512_BF16=$(LLAMA_AVX512) \
  -DGGML_AVX_VNNI=$(LLAMA_AVX_VNNI) -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF
# verl pins transformers<5.11: it gets its own environment (`make verl-env`), used by
# `rewatch train verl --dry-run --verl-python .venv-verl/bin/python` and its tests
VERL_VENV := .venv-verl
VERL_STAMP := $(VERL_VENV)/.installed
RUN ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test lint bench clean-venv setup samples verl-env

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) once, AVX-512 $(LLAMA_AVX512) (~5 min)"; \
	  mkdir -p $(WHEELS); \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel -q --no-deps --no-cache-dir \
	    -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION); \
	fi
	$(BIN)/pip install -q --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/pip install -q --find-links $(WHEELS) --only-binary llama-cpp-python \
	  "llama-cpp-python[server]==$(LLAMA_VERSION)"
	$(BIN)/pip install -q --find-links $(WHEELS) --only-binary llama-cpp-python -e ".[dev,train,ray]"
	$(MAKE) --no-print-directory samples VENV=$(VENV)
	$(BIN)/python -m rewatch.models.packaged setup
	touch $(STAMP)

verl-env: $(VERL_STAMP)

$(VERL_STAMP): pyproject.toml Makefile $(STAMP)
	test -x $(VERL_VENV)/bin/python || $(PY) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/pip install -q --upgrade pip
	$(VERL_VENV)/bin/pip install -q --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(VERL_VENV)/bin/pip install -q --find-links $(WHEELS) --only-binary llama-cpp-python -e ".[verl]"
	touch $(VERL_STAMP)

# gradio's world.mp4 (from the pinned wheel, at setup only) and the synthetic sample videos
samples:
	$(BIN)/python -m rewatch.samples fetch >/dev/null \
	  || echo "world.mp4 not fetched: the demo goes on without it"

demo: $(STAMP)
	$(BIN)/rewatch demo --out $(RUN)

test: $(STAMP) $(VERL_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check rewatch tests
	$(BIN)/mypy rewatch

bench: $(STAMP)
	$(BIN)/rewatch bench all

clean-venv:
	rm -rf $(VENV) $(VERL_VENV)
