# tf_rcnn developer commands. Every target works from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KERAS_BACKEND := tensorflow

.PHONY: install test test-extended lint demo benchmark-ops clean

# Creates .venv and installs the package (editable) with its test extras.
# The stamp file makes the target a no-op when nothing changed.
install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

# The demo: synthetic shapes -> train Faster R-CNN (tiny FPN backbone) -> evaluate on held-out
# images -> detections.png -> SavedModel for TF Serving. Re-running resumes or reuses what is
# already there.
DEMO_CONFIG ?= configs/shapes_faster_rcnn.py
DEMO_DIR ?= runs/demo

demo: install
	$(BIN)/python train.py --config=$(DEMO_CONFIG) --model_dir=$(DEMO_DIR)
	$(BIN)/python eval.py --config=$(DEMO_CONFIG) --checkpoint=$(DEMO_DIR) \
		--output_dir=$(DEMO_DIR)/eval
	rm -rf $(DEMO_DIR)/saved_model/1
	$(BIN)/python export/export_saved_model.py --config=$(DEMO_CONFIG) \
		--checkpoint=$(DEMO_DIR) --output_dir=$(DEMO_DIR)/saved_model/1
	@echo
	@echo "Demo finished:"
	@echo "  training data and held-out data:  data_cache/shapes/{train,val}"
	@echo "  checkpoints and TensorBoard logs: $(DEMO_DIR)  (pip install tensorboard; tensorboard --logdir $(DEMO_DIR))"
	@echo "  metrics:                          $(DEMO_DIR)/eval/metrics.json"
	@echo "  detections (COCO results):        $(DEMO_DIR)/eval/detections.json"
	@echo "  picture of detections:            $(DEMO_DIR)/eval/detections.png"
	@echo "  SavedModel for TF Serving:        $(DEMO_DIR)/saved_model/1"

lint: install
	$(BIN)/ruff check .

# Two pytest workers (pytest-xdist) by default: most tests are single-threaded tracing and
# Python, so two processes use a 2-core machine fully. A class or module keeps its tests (and its
# expensive fixtures) on one worker. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope -m "not extended"

# The checks make test leaves out for time (pytest marker "extended"): every LiteRT family and
# quantisation mode, the R50-C4 COCO recipe end to end.
test-extended: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope -m extended

benchmark-ops: install
	$(BIN)/python benchmarks/ops.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
