# visionlake: `make demo` and `make test` set everything up on a fresh machine (Python 3.11 and Java 17 needed).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.setup-stamp
# Horovod is built from source against the installed TensorFlow; keep the flags identical so pip's wheel cache
# reuses the built wheel on the next setup.
HOROVOD_BUILD := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

.PHONY: setup demo test test-unit bench-ingest bench-train bench-gan bench-anomaly bench-score dist clean mlflow-ui

setup: $(STAMP)

$(STAMP): constraints.txt setup.py
	@command -v java >/dev/null || { echo "Java 17 is required for Spark: install openjdk-17-jre-headless"; exit 1; }
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (the pinned stack is for Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install pip==24.3.1 setuptools==75.8.0 wheel==0.45.1
	$(PIP) install -c constraints.txt -e '.[test]'
	$(HOROVOD_BUILD) $(PIP) install --no-build-isolation -c constraints.txt horovod==0.28.1
	$(PY) -c "import horovod.tensorflow as hvd; assert hvd.gloo_built(), 'Horovod was built without Gloo'"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/visionlake demo

test: setup
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests/unit

bench-ingest: setup
	$(PY) bench/ingest_bench.py

bench-train: setup
	$(PY) bench/train_bench.py

bench-gan: setup
	$(PY) bench/gan_bench.py --keep bench-results/gan

bench-anomaly: setup
	$(PY) bench/anomaly_bench.py

bench-score: setup
	$(PY) bench/score_bench.py

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

dist: setup
	$(PIP) wheel --no-deps -w dist .

clean:
	rm -rf lake data mlartifacts mlflow.db checkpoints spark-warehouse build dist lib/*.egg-info bench-results
