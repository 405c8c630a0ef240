# snnconv: `make demo` installs and runs the main job on a sample model; `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of PyTorch is pinned and installed first: an unpinned torch pulls a CUDA build.
# For a GPU: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126 (README: GPUs).
TORCH_PIN := torch==2.13.0
# NIR export and its check in snnTorch (the extras nir, nir-check): --no-deps, because
# snnTorch's and nirtorch's requirements would pull a CUDA torch; the tests skip without them
NIR_PKGS := "nir==1.0.6" "h5py>=3,<4" "snntorch==1.0.0" "nirtorch==2.6"
TORCH_INDEX ?=

.PHONY: install demo test lint bench bench-ratecoded bench-rate docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(NIR_PKGS)
	touch $(STAMP)

demo: install
	@mkdir -p build/demo
	$(BIN)/snnconv convert sample_models/cnn.onnx --calib sample_models/digits_train.npz -o build/demo/cnn.snn
	$(BIN)/snnconv inspect build/demo/cnn.snn
	$(BIN)/snnconv verify build/demo/cnn.snn --data sample_models/digits_test.npz --junit build/demo/verify.xml
	$(BIN)/snnconv finetune build/demo/cnn.snn --quantize 4 --time-bits 4 --epochs 5 --target hardware/generic.yaml -o build/demo/cnn.snnq
	$(BIN)/snnconv run build/demo/cnn.snnq --data sample_models/digits_test.npz
	$(BIN)/snnconv verify build/demo/cnn.snnq --data sample_models/digits_test.npz

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --durations=10

# The site (build/site) is built offline: no web fonts, no external assets; warnings are errors.
docs: install
	$(BIN)/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null || \
		$(BIN)/python -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# Benchmarks (benchmarks/README.md): prints the table, writes build/bench.json; about 10 minutes.
bench: install
	$(BIN)/python benchmarks/run.py --out build/bench.json

# Rate-coded contrast (SpikingJelly ann2snn, T = 4..256) on the MNIST CNN; needs ../shared/data/mnist.
# SpikingJelly's own requirements pull CUDA builds: installed --no-deps with the two it imports.
bench-ratecoded: install
	$(BIN)/python -m pip install -q --no-deps "spikingjelly==2.0.0" "loguru>=0.7,<1" tqdm
	$(BIN)/python benchmarks/ratecoded.py --out build/bench_ratecoded.json

# snnconv's own rate-coded IF nets, plain and proxy-learned, vs TTFS on the MNIST MLP and CNN
# (3 seeds); needs ../shared/data/mnist; about 45 minutes on two cores.
bench-rate: install
	$(BIN)/python benchmarks/rate_proxy.py --out build/rate_proxy.json

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf build .pytest_cache
