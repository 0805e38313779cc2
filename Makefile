# The two commands of the README: `make demo` and `make test`. Both create .venv/ if missing and
# install the package into it (editable) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= runs/demo
# The CPU torch build the parity tests were run with (`make test TORCH=` skips it: those tests
# then skip with their reason).
TORCH ?= torch==2.13.0
# ONNX export (docs/inference.md): jax2onnx without its dependencies (every release pins
# orbax-checkpoint<0.11.37, below ours); the export extra brings what it needs.
JAX2ONNX ?= jax2onnx==0.17.1

.PHONY: demo test install clean-demo ablation

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,export]'
	$(PY) -m pip install -q --no-deps '$(JAX2ONNX)'
	touch $(STAMP)

# The ViT parity references (tests/models/vit), without their dependencies: both require
# torchvision, which would replace the CPU torch with a CUDA build (`make test PARITY=` skips them:
# those tests then skip with their reason). Their light dependencies are in the test extra.
PARITY ?= timm==1.0.31 open-clip-torch==3.3.0

$(STAMP)-torch: $(STAMP)
	$(if $(TORCH),$(PY) -m pip install -q '$(TORCH)')
	$(if $(PARITY),$(PY) -m pip install -q --no-deps $(PARITY))
	touch $@

install: $(STAMP)

# Render SynthMARS, prepare it, train, evaluate, print the table. Rerunning resumes (and just
# prints the table once training is complete); `make clean-demo` starts over.
demo: $(STAMP)
	$(PY) -m reid_jax.main --config configs/synth_mars_demo.py --workdir $(WORKDIR)

# The fusion ablation of docs/experiments.md (lr grid + 66 short jobs, two at a time, then swaps,
# influence and the report: under 90 min on 2 CPU cores, measured there; ABLATION_FLAGS=--quick: a
# first look); rerunning resumes. ABLATION_FLAGS e.g. '--seeds 2 --corruption_rates 0.15'.
ABLATION_DIR ?= runs/ablation
ABLATION_FLAGS ?=
ablation: $(STAMP)
	$(PY) -m reid_jax.experiments.ablate --base configs/synth_mars_ablation.py \
		--workdir $(ABLATION_DIR) $(ABLATION_FLAGS)

# pytest exits 5 when it collects no test: that is not a failure of the suite. TEST_WORKERS
# xdist workers, each taking whole files (a file's fixtures are built once) in the order that
# tests/conftest.py gives (the longest first; xdist would otherwise start with the files of most
# tests); 2 = CI's cores.
TEST_WORKERS ?= 2
test: $(STAMP)-torch
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

clean-demo:
	rm -rf $(WORKDIR)
