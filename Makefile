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

# Webhook throughput and worker memory budgets, on PostgreSQL (BENCH_DATABASE_URL, default
# postgresql://postgres@127.0.0.1:5432/test) under gunicorn; needs wrk (apt-get install wrk).
.PHONY: bench
bench: $(VENV)/.installed
	$(BIN)/python benchmarks/webhook_throughput.py $(BENCH_ARGS)
