# Everything installs into .venv; each target installs what it needs first, so a fresh clone can run any of them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# 2.13.0 is the CPU wheel these machines carry; an unpinned torch can pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test test-slow lint demo bench bench-quick bench-speed gpu-check clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,gguf,plots]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check ptcli tests scripts bench

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install -q -e ".[dev,gguf,plots,bench]" "$(TORCH_SPEC)"
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py

bench-quick: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py --quick

# Issue 8's speed checks in one run (predict vs bare forward per precision, a training step vs PEFT, int8 vs fp32 on
# both backbones, slot-before-text training memory): ~25 min on 2 idle CPU cores; writes bench/results/*-speed.md.
bench-speed: $(VENV)/.bench-installed
	$(BIN)/python bench/speed.py --out bench/results

# Needs CUDA: trains, predicts and evaluates tiny models on the GPU in fp32 and bf16 and compares with CPU (< 5 min).
gpu-check: $(STAMP)
	$(BIN)/python scripts/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
