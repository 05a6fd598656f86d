# Everything a fresh Linux/macOS machine with Python 3.11+ needs: `make run`, `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_SECONDS ?= 20
CHAOS_SECONDS ?= 600
FUZZ_SECONDS ?= 60

.PHONY: run test venues chaos fuzz perf lint backtest sweep clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/gekko run --config config.toml --duration $(DEMO_SECONDS)

backtest: $(VENV)/.installed-run
	$(BIN)/gekko backtest --config config.toml

# gekko sweep on a local Ray runtime (Ray and Optuna are the sweep extra, not the engine's)
$(VENV)/.installed-sweep: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[sweep]'
	touch $@ $(VENV)/.installed-run

sweep: $(VENV)/.installed-sweep
	$(BIN)/gekko sweep --config config.toml

# the suite runs on two pytest-xdist workers, each file on one (its module fixtures run once);
# the HTML report's browser test renders in Debian's headless Chromium: installed here where
# apt-get can (root); elsewhere that test says why it skipped
test: $(VENV)/.installed-test
	@export DEBIAN_FRONTEND=noninteractive; command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
		|| echo "note: no chromium (Debian package chromium): the report's browser test will skip"; }
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not chaos_long and not chaos_bounded and not venue_matrix"

# the real-process venue runs of Coinbase and Kraken (Binance.US's run in `make test`)
venues: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -m venue_matrix tests

# the chaos runs (tests/chaos): the seeded 60 s one, then CHAOS_SECONDS of faults;
# CHAOS_SEED=<n> replays a seed
chaos: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -s -m chaos_bounded tests/chaos
	CHAOS_SECONDS=$(CHAOS_SECONDS) $(BIN)/python -m pytest -q -s -m chaos_long tests/chaos

# every fuzz target (tests/fuzz) under atheris for FUZZ_SECONDS each; findings under var/fuzz/
# (make test runs their fast hypothesis form). atheris has Linux wheels only: its own extra
$(VENV)/.installed-fuzz: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,fuzz]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

fuzz: $(VENV)/.installed-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(BIN)/python -m tests.fuzz.run_atheris --seconds $(FUZZ_SECONDS)

perf: $(VENV)/.installed-test
	mkdir -p perf/results
	@for f in perf/bench_*.py; do \
		name=$$(basename $$f .py); \
		echo "== $$name"; \
		rm -f perf/results/$$name.json; \
		$(BIN)/python $$f --fast -o perf/results/$$name.json --quiet || exit 1; \
	done

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var perf/results
