# Set-up is part of every target: a fresh machine needs nothing but python3, make and pip's registry.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# The CPU build of torch; the Dockerfile installs the CUDA build instead.
TORCH  ?= torch==2.13.0

.PHONY: demo check typecheck test lint bench clean

$(STAMP): pyproject.toml constraints.txt tests/crd/package-lock.json
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,local]"
	# The CRDs' schemas (KEDA, Prometheus Operator) that the chart's tests validate against.
	npm ci --silent --no-audit --no-fund --prefix tests/crd
	# The console's browser tests drive Debian's chromium (Playwright's own download cannot be reached).
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	# Text in images: Debian's Tesseract with the demo's five languages.
	command -v tesseract >/dev/null && tesseract --list-langs 2>/dev/null | grep -qx por || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr tesseract-ocr-spa tesseract-ocr-fra tesseract-ocr-deu tesseract-ocr-por >/dev/null; }
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/factmatch demo

# Before each commit: lint, format, types and the unit tier (pure logic, the in-memory broker and
# store), about a minute on 2 cores. `make test` (what CI runs) before a stop.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy worker trainer
	$(PY) -m pytest -q -p no:cacheprovider -m unit

typecheck: $(STAMP)
	$(VENV)/bin/mypy worker trainer

# Two processes: most integration time waits on the broker, so the CPU-bound CheckThat! module
# (collected first, tests/conftest.py) runs beside it. `.venv/bin/python -m pytest` alone runs one process.
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy worker trainer

bench: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) .factmatch
