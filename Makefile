# Capsule — every target installs what it needs first (scripts/bootstrap.sh), so each one
# works on a fresh Debian machine by itself.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO  := build/demo

.PHONY: install engines demo test lint bench clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

demo: install
	rm -rf $(DEMO)
	$(BIN)/capsule freeze capsules/paper-2d-torch --out $(DEMO)/paper-2d-torch
	$(BIN)/capsule verify $(DEMO)/paper-2d-torch
	$(BIN)/capsule replay $(DEMO)/paper-2d-torch --out $(DEMO)/replay
	$(BIN)/capsule diff $(DEMO)/paper-2d-torch $(DEMO)/replay --require identical
	$(BIN)/capsule sweep $(DEMO)/paper-2d-torch --seeds 4 --jobs 2
	$(BIN)/capsule sweep $(DEMO)/paper-2d-torch --orders 4 --jobs 2
	$(BIN)/capsule replay $(DEMO)/paper-2d-torch --set train.lr=0.005 --out $(DEMO)/replay-lr
	$(BIN)/capsule report $(DEMO)/paper-2d-torch $(DEMO)/replay $(DEMO)/replay-lr --out $(DEMO)/report.html
	@echo "report: $(abspath $(DEMO)/report.html)"

# The engines the tests talk to for real (a Docker daemon, Podman's API service, a single-node
# Slurm), started once and then reused; and the browser the report tests open pages in.
engines:
	scripts/docker-up.sh
	scripts/podman-up.sh
	scripts/slurm-up.sh
	scripts/chromium-up.sh
	scripts/oci-up.sh

test: install engines
	$(BIN)/ruff check builder tests benchmarks scripts
	$(BIN)/mypy builder
	$(BIN)/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: install
	$(BIN)/ruff check builder tests benchmarks scripts
	$(BIN)/ruff format --check builder tests benchmarks scripts
	$(BIN)/mypy builder

bench: install engines
	$(BIN)/python benchmarks/freeze_overhead.py
	$(BIN)/python benchmarks/image_bench.py
	$(BIN)/python benchmarks/engine_bench.py capsules/numpy-softmax
	$(BIN)/python benchmarks/base_carry.py
	$(BIN)/python benchmarks/startup.py
	TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0 OMP_NUM_THREADS=1 $(BIN)/python benchmarks/tf_loop_speed.py
	$(BIN)/python benchmarks/portable_check.py
	$(BIN)/python benchmarks/portable_speed.py

clean:
	rm -rf build $(VENV)
