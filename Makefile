# segkit: `make demo` and `make test` set everything up on a fresh machine (virtual
# environment, dependencies at the versions in constraints.txt, the C++ extension), then run.
#
#   make test                          # Python 3 on PATH, .venv, the upstream mmseg line
#   make test PYTHON=python3.12 VENV=.venv312
#   make install MMSEG=onedl VENV=.venv-onedl   # the maintained line (onedl-mmsegmentation 1.4)
#   make install TORCH=keep PYTHON=/opt/conda/bin/python   # keep that interpreter's (CUDA) torch
#   make check-install                 # the full install resolves from PyPI on every Python here
#   make docs                          # the docs site into docs/_build/html (warnings are errors)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The OpenMMLab line: upstream (mmsegmentation 1.2.2, mmengine, mmcv-lite) or onedl
# (onedl-mmsegmentation 1.4, onedl-mmengine, onedl-mmcv): the same import names, one per venv.
MMSEG ?= upstream
ifeq ($(MMSEG),onedl)
EXTRAS ?= dev,onedl,ray
else ifeq ($(MMSEG),upstream)
EXTRAS ?= dev,docs,mmseg,ray
else
$(error MMSEG must be upstream or onedl, not '$(MMSEG)')
endif
# onedl-mmcv is an sdist. MMCV_OPS=0 builds it with build isolation, where torch is not visible,
# so without compiled ops (seconds; segkit.mmseg's mmcv._ext stand-in covers them); MMCV_OPS=1
# compiles its ops against the venv's torch (about 12 minutes on 2 cores).
MMCV_OPS ?= 0
# TORCH=pin: torch at constraints.txt's version (the CPU build where the machine's pip offers one,
# PyPI's CUDA build otherwise). TORCH=keep: a venv on top of $(PYTHON)'s own packages
# (--system-site-packages) that keeps its torch, and every other package it already has, as they
# are (their pins are dropped from the constraints; the install fails if torch would change).
TORCH ?= pin
ifeq ($(TORCH),keep)
CONSTRAINTS := $(VENV)/constraints-keep.txt
VENV_ARGS := --system-site-packages
else ifeq ($(TORCH),pin)
CONSTRAINTS := constraints.txt
VENV_ARGS :=
else
$(error TORCH must be pin or keep, not '$(TORCH)')
endif
# PYPI_ONLY=1: install as on a user's fresh machine, this machine's pip configuration ignored
# (no config files, no find-links or extra index, no global constraint): PyPI only.
PYPI_ONLY ?= 0
ifeq ($(PYPI_ONLY),1)
export PIP_CONFIG_FILE := /dev/null
unexport PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX
endif
# More pip install arguments, e.g. offline: PIP_ARGS="--no-index --find-links .whl"
PIP_ARGS ?=
STAMP := $(VENV)/.segkit-installed
CSRC := $(shell find csrc -type f 2>/dev/null | sort)
PYTEST_ARGS ?=
# segkit.mmseg's tests (datasets, transforms, hook, TTA, training, checkpoints, tools/train.py)
MMSEG_TESTS ?= tests/test_mmseg.py tests/test_mmseg_train.py tests/test_mmseg_crf.py
BENCH_ARGS ?= --benchmark-min-rounds=5 --benchmark-max-time=1
SUITES ?=
# The interpreters CI uses beside $(PYTHON) (found under pyenv or on PATH)
PYTHON312 ?= $(shell python3 scripts/check_install.py --find 3.12)
export NO_ALBUMENTATIONS_UPDATE := 1

# The docs site (Sphinx): offline, warnings are errors (-W), every reference must resolve (-n)
DOCS_OUT ?= docs/_build/html

.PHONY: all install demo docs test test-mmseg install-py312 test-py312 install-onedl test-onedl \
	check-install check-wheel system-deps bench gpu-check clean distclean

all: install

# (TORCH=keep on an interpreter without ensurepip, e.g. Debian's without python3-venv: the venv
# gets no pip of its own and uses that interpreter's, which installs into the venv all the same)
$(PY):
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV) $(if $(VENV_ARGS),|| $(PYTHON) -m venv $(VENV_ARGS) --without-pip $(VENV))

# TORCH=keep: constraints.txt less the pins of what $(PYTHON) already has (torch first of all)
$(VENV)/constraints-keep.txt: constraints.txt scripts/keep_constraints.py | $(PY)
	$(PY) scripts/keep_constraints.py constraints.txt $@

# torch (PyPI's is the CUDA build: GBs) is installed on its own first, so that venvs set up side
# by side (CI) download it at once; the editable install, which builds in the checkout (egg-info,
# build/), takes a lock so that two of them never write there together.
comma := ,
NEEDS_TORCH := $(filter dev mmseg onedl,$(subst $(comma), ,$(EXTRAS)))
BUILD_LOCK := $(if $(shell command -v flock 2>/dev/null),flock .segkit-build.lock)

# Dependencies and the editable install; redone when the build inputs change.
$(STAMP): $(PY) pyproject.toml setup.py $(CONSTRAINTS) $(CSRC)
	$(PIP) install -q $(PIP_ARGS) -c $(CONSTRAINTS) pip setuptools wheel pybind11
ifneq ($(NEEDS_TORCH),)
	$(PIP) install -q $(PIP_ARGS) -c $(CONSTRAINTS) torch
endif
ifeq ($(MMSEG),onedl)
ifeq ($(MMCV_OPS),1)
	$(PIP) install -q $(PIP_ARGS) -c $(CONSTRAINTS) torch packaging
	$(PIP) install -q $(PIP_ARGS) -c $(CONSTRAINTS) --no-build-isolation onedl-mmcv
else
	$(PIP) install -q $(PIP_ARGS) -c $(CONSTRAINTS) onedl-mmcv
endif
endif
	$(BUILD_LOCK) $(PIP) install -q $(PIP_ARGS) -c $(CONSTRAINTS) --no-build-isolation -e ".$(if $(strip $(EXTRAS)),[$(EXTRAS)])"
ifeq ($(TORCH),keep)
	$(PY) scripts/keep_constraints.py --verify $(CONSTRAINTS)
endif
	$(VENV)/bin/segkit info --fast
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segkit demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# docs/generated holds autosummary's pages of the API reference, rebuilt from the docstrings
docs: $(STAMP)
	rm -rf docs/generated $(DOCS_OUT)
	$(PY) -m sphinx -W -n --keep-going -q -b html docs $(DOCS_OUT)
	@echo "docs: $(DOCS_OUT)/index.html"

# The plug-in's tests alone (e.g. make test-mmseg MMSEG=onedl VENV=.venv-onedl)
test-mmseg: $(STAMP)
	$(PY) -m pytest $(MMSEG_TESTS) $(PYTEST_ARGS)

# What CI runs beside `make test`: the whole suite on Python 3.12 from PyPI alone, in its own
# venv; the plug-in's tests on the onedl line, in its own venv. The install-* targets set those
# venvs up alone, so that CI downloads them while the first suite runs.
PY312_ARGS = PYTHON=$(PYTHON312) VENV=.venv312 PYPI_ONLY=1
ONEDL_ARGS = MMSEG=onedl VENV=.venv-onedl

install-py312:
	@test -n "$(PYTHON312)" || { echo "install-py312: no Python 3.12 found (pyenv, PATH)"; exit 1; }
	$(MAKE) install $(PY312_ARGS)

test-py312: install-py312
	$(MAKE) test $(PY312_ARGS)

install-onedl:
	$(MAKE) install $(ONEDL_ARGS)

test-onedl: install-onedl
	$(MAKE) test-mmseg $(ONEDL_ARGS)

# Debian packages the tests use: chromium renders the audit page (tests/test_audit.py). Installed
# with apt-get where this runs as root; elsewhere it says what to install.
system-deps:
	@if command -v chromium >/dev/null 2>&1; then echo "system-deps: chromium is installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "system-deps: install chromium (apt-get install chromium) for the audit page test"; fi

# The full install resolves from PyPI alone for every Python 3.11-3.13 found here.
check-install:
	python3 scripts/check_install.py $(CHECK_INSTALL_ARGS)

# `pip install .` and a built wheel, each into a fresh venv with build isolation, from PyPI alone.
check-wheel:
	PYTHON=$(PYTHON) bash scripts/check_wheel.sh

bench: $(STAMP)
	$(PIP) install -q -c constraints.txt pydensecrf2 || echo "pydensecrf2 did not build: its row is skipped"
	$(PY) benchmarks/run.py $(SUITES) --pytest-args "$(BENCH_ARGS)"

gpu-check:
	bash scripts/gpu_check.sh

clean:
	rm -rf build demo_out docs/_build docs/generated .segkit-build.lock .pytest_cache .hypothesis segkit/_C*.so
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) .venv312 .venv-onedl dist

# ---- robustness: the long bad-input run and the scale benchmark (not part of `make test`)
.PHONY: test-bad-input-long bench-scale
# Every public op and command fed bad input: 400 examples per op and backend (about 10 min).
test-bad-input-long: $(STAMP)
	SEGKIT_BAD_INPUT_LONG=1 $(PY) -m pytest tests/test_bad_input.py $(PYTEST_ARGS)

# The recipe's dataset size in one run, at three fractions (SCALE_ARGS="--fractions ...").
SCALE_ARGS ?=
bench-scale: $(STAMP)
	$(PY) benchmarks/bench_scale.py $(SCALE_ARGS)
