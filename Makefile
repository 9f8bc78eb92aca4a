# infodecomp: `make demo` (install + every command on the embedded ShapesWorld default, ending
# with the path of the HTML report), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is a CPU build on a CPU-only machine with the local wheel, a CUDA build from PyPI elsewhere.
TORCH_SPEC ?= torch==2.13.0
OUT ?= outputs/demo
ARO_ROOT ?=
COCO_ROOT ?=
MANIFEST_IT ?=
MANIFEST_100 ?=
N_SAMPLES ?= 100

.PHONY: install test test-all lint format demo reproduce validate bench clean

$(BIN)/infodecomp:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[dev,cluster]"

install: $(BIN)/infodecomp

test: install
	$(BIN)/pytest -m "not slow and not gpu" -q

test-all: install
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check infodecomp tests scripts examples
	$(BIN)/ruff format --check infodecomp tests scripts examples

format: install
	$(BIN)/ruff format infodecomp tests scripts examples
	$(BIN)/ruff check --fix infodecomp tests scripts examples

validate: install
	$(BIN)/infodecomp validate run.out_dir=$(OUT)/validate

demo: install
	$(BIN)/infodecomp validate run.out_dir=$(OUT)/validate
	$(BIN)/infodecomp aro run.out_dir=$(OUT)/aro-relation data=shapes-relation
	$(BIN)/infodecomp aro run.out_dir=$(OUT)/aro-attribute data=shapes-attribute
	$(BIN)/infodecomp aro run.out_dir=$(OUT)/aro-order data=shapes-order
	$(BIN)/infodecomp aro run.out_dir=$(OUT)/aro-winoground data=shapes-winoground
	$(BIN)/infodecomp localize run.out_dir=$(OUT)/localize
	$(BIN)/infodecomp intervene run.out_dir=$(OUT)/intervene
	$(BIN)/infodecomp visualize run.out_dir=$(OUT)/visualize
	$(BIN)/infodecomp aro -m data=shapes-relation estimator.n_samples=10,30 run.out_dir=$(OUT)/aro-sweep
	$(BIN)/infodecomp calibrate model=shapes-learned n_items=6 word_items=4 estimator.n_samples=48 run.out_dir=$(OUT)/calibrate
	$(BIN)/infodecomp aggregate runs=[$(OUT)/aro-relation,$(OUT)/aro-attribute,$(OUT)/aro-order,$(OUT)/aro-winoground,$(OUT)/aro-sweep,$(OUT)/localize,$(OUT)/intervene,$(OUT)/calibrate] run.out_dir=$(OUT)/tables
	$(BIN)/infodecomp report runs=[$(OUT)/aro-relation,$(OUT)/aro-attribute,$(OUT)/aro-order,$(OUT)/aro-winoground,$(OUT)/aro-sweep,$(OUT)/localize,$(OUT)/intervene,$(OUT)/visualize,$(OUT)/calibrate] run.out_dir=$(OUT)/report

bench: install
	$(BIN)/infodecomp bench run.out_dir=$(OUT)/bench

# The paper's four tables on Stable Diffusion 2.1 base (one GPU; see README for run times).
# Every input path is checked before the first (hours-long) run starts.
reproduce: install
	@test -n "$(ARO_ROOT)" || (echo "set ARO_ROOT=<folder with the ARO JSON files and images/>"; exit 2)
	@test -n "$(COCO_ROOT)" || (echo "set COCO_ROOT=<folder with val2017/ and annotations/>"; exit 2)
	@test -n "$(MANIFEST_IT)" || (echo "set MANIFEST_IT=<COCO-IT manifest CSV (README: make reproduce)>"; exit 2)
	@test -n "$(MANIFEST_100)" || (echo "set MANIFEST_100=<COCO100-IT manifest CSV (README: make reproduce)>"; exit 2)
	@test -d "$(ARO_ROOT)" || (echo "ARO_ROOT=$(ARO_ROOT) is not a folder"; exit 2)
	@test -d "$(COCO_ROOT)" || (echo "COCO_ROOT=$(COCO_ROOT) is not a folder"; exit 2)
	@test -f "$(MANIFEST_IT)" || (echo "MANIFEST_IT=$(MANIFEST_IT) is not a file: give the COCO-IT manifest CSV"; exit 2)
	@test -f "$(MANIFEST_100)" || (echo "MANIFEST_100=$(MANIFEST_100) is not a file: give the COCO100-IT manifest CSV"; exit 2)
	$(BIN)/infodecomp aro +experiment=paper-table1 data=aro-vg-relation data.root=$(ARO_ROOT) run.out_dir=outputs/paper/aro-vg-relation
	$(BIN)/infodecomp aro +experiment=paper-table1 data=aro-vg-attribution data.root=$(ARO_ROOT) run.out_dir=outputs/paper/aro-vg-attribution
	$(BIN)/infodecomp aro +experiment=paper-table1 data=aro-coco-order data.root=$(ARO_ROOT) run.out_dir=outputs/paper/aro-coco-order
	$(BIN)/infodecomp aro +experiment=paper-table1 data=aro-flickr-order data.root=$(ARO_ROOT) run.out_dir=outputs/paper/aro-flickr-order
	$(BIN)/infodecomp localize +experiment=paper-table3 data.root=$(COCO_ROOT) data.manifest=$(MANIFEST_IT) run.out_dir=outputs/paper/localize
	$(BIN)/infodecomp intervene +experiment=paper-table4 data.root=$(COCO_ROOT) data.manifest=$(MANIFEST_100) run.out_dir=outputs/paper/intervene
	$(BIN)/infodecomp aggregate runs=[outputs/paper/aro-vg-relation,outputs/paper/aro-vg-attribution,outputs/paper/aro-coco-order,outputs/paper/aro-flickr-order,outputs/paper/localize,outputs/paper/intervene] run.out_dir=outputs/paper/tables

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
