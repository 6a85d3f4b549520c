# Two commands for a fresh machine:  make demo  and  make test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app app
DEMO_DB  := instance/demo.db
DEMO_DAY ?= 1999-10-25
# The demo signs its own simulated provider requests; this token exists only for the demo.
DEMO_ENV := DATABASE_URL=sqlite:///$(DEMO_DB) TWILIO_AUTH_TOKEN=demo-only-not-a-secret \
            TELEPHONY_CLIENT=fake PUBLIC_BASE_URL=https://sim.hotline.invalid

.PHONY: setup demo test tts clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# espeak-ng renders the Estonian prompts (the provider has no Estonian voice).
tts:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; \
	  else echo "espeak-ng missing: install it (sudo apt-get install espeak-ng)"; exit 1; fi; }

setup: $(VENV)/.installed tts

demo: setup
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	$(DEMO_ENV) $(FLASK) db upgrade
	$(DEMO_ENV) $(FLASK) config load config/line.sample.yaml
	$(DEMO_ENV) $(FLASK) prompts render
	$(DEMO_ENV) $(FLASK) simulate --day $(DEMO_DAY)
	$(DEMO_ENV) $(FLASK) report --from $(DEMO_DAY) --to $(DEMO_DAY)

test: setup
	$(BIN)/pytest -q

clean:
	rm -rf instance .pytest_cache

# Webhook throughput and worker memory budgets, then dispatch latency (200 waiting callers,
# 50 agents), on PostgreSQL (BENCH_DATABASE_URL, default
# postgresql://postgres@127.0.0.1:5432/test) under gunicorn; the first needs wrk (apt-get
# install wrk). Options: BENCH_ARGS for the first, DISPATCH_BENCH_ARGS for the second. Both
# run; the exit status is the first non-zero one.
.PHONY: bench
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed $(VENV)/.bench-installed
	@status=0; \
	$(BIN)/python benchmarks/webhook_throughput.py $(BENCH_ARGS) || status=$$?; \
	$(BIN)/python benchmarks/dispatch_latency.py $(DISPATCH_BENCH_ARGS) || \
	  { s=$$?; [ $$status -ne 0 ] || status=$$s; }; \
	exit $$status
