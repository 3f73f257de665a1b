# segkit: `make demo` and `make test` set everything up on a fresh machine (virtual
# environment, dependencies at the versions in constraints.txt, the C++ extension), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= dev,mmseg,ray
STAMP := $(VENV)/.segkit-installed
CSRC := $(shell find csrc -type f 2>/dev/null | sort)
PYTEST_ARGS ?=
BENCH_ARGS ?= --benchmark-min-rounds=5 --benchmark-max-time=1
SUITES ?=
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: all install demo test bench gpu-check clean distclean

all: install

$(PY):
	$(PYTHON) -m venv $(VENV)

# Dependencies and the editable install; redone when the build inputs change.
$(STAMP): $(PY) pyproject.toml setup.py constraints.txt $(CSRC)
	$(PIP) install -q -c constraints.txt pip setuptools wheel pybind11
	$(PIP) install -q -c constraints.txt --no-build-isolation -e ".[$(EXTRAS)]"
	$(PY) -c "import segkit; [print('  ', b) for b in segkit.backends().values()]"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segkit demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PIP) install -q -c constraints.txt pydensecrf2 || echo "pydensecrf2 did not build: its row is skipped"
	$(PY) benchmarks/run.py $(SUITES) --pytest-args "$(BENCH_ARGS)"

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build demo_out .pytest_cache .hypothesis segkit/_C*.so
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
