# Two entry points for a fresh clone (README): `make demo` runs the pipeline on the shipped
# examples, `make test` runs the default test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90

.PHONY: install demo stylize-demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade "pip>=24"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lwst run manifests/example.csv --out out/example --size 256

stylize-demo: $(STAMP)
	$(BIN)/lwst stylize --content examples/astronaut.jpg --geometry examples/face.jpg \
		--texture examples/texture_strokes.jpg --size 384 --out out/astronaut.png \
		--warped-out out/astronaut_warped.png --flow-out out/astronaut.flo \
		--metadata-out out/astronaut.json

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest --durations=25

test-slow: $(STAMP)
	$(BIN)/pytest -m slow || [ $$? -eq 5 ]

clean:
	rm -rf out .pytest_cache .ruff_cache
