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

# Airflow lives in its own venv so its dependencies never meet the job stack's; it drives jobs through spark-submit.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.setup-stamp
NOTEBOOKS_STAMP := $(VENV)/.notebooks-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: setup airflow-setup demo test test-unit airflow-test bench-ingest bench-train bench-gan bench-anomaly \
	bench-score bench-photos dist clean mlflow-ui notebooks notebooks-strip airflow-demo

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

airflow-setup: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): constraints-airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints-airflow.txt \
		apache-airflow apache-airflow-providers-apache-spark
	touch $(AIRFLOW_STAMP)

demo: setup
	$(VENV)/bin/visionlake demo

# The whole suite, the Airflow DAG run included (tests/integration/test_airflow.py).
test: setup airflow-setup
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests/unit

# Loads the DAG and runs it for real with `airflow dags test` on demo data (SQLite metadata DB, loopback only).
airflow-test: setup airflow-setup
	$(PY) -m pytest tests/integration/test_airflow.py

# Absolute roots: the tasks' spark-submit runs in Airflow's working directory, not necessarily this one.
AIRFLOW_DEMO_CONF = {"raw_path": "$(CURDIR)/data/demo-raw", "overrides": ["lake.root=$(CURDIR)/lake", \
	"tracking.tracking_uri=sqlite:///$(CURDIR)/mlflow.db", "tracking.artifact_root=$(CURDIR)/mlartifacts", \
	"train.checkpoint_root=$(CURDIR)/checkpoints"]}

# The DAG on the demo data in this checkout (lake/, mlflow.db), as a scheduler would run it; the Airflow metadata DB
# and logs go to build/airflow.
airflow-demo: setup airflow-setup dist
	$(VENV)/bin/visionlake demo-data
	mkdir -p build/airflow
	export AIRFLOW_HOME=$(CURDIR)/build/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
		AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$(CURDIR)/build/airflow/airflow.db \
		AIRFLOW_CONN_VISIONLAKE_SPARK='{"conn_type": "spark", "host": "local[*]"}' \
		AIRFLOW_VAR_VISIONLAKE_HOME=$(CURDIR) AIRFLOW_VAR_VISIONLAKE_PY_FILES=$$(ls $(CURDIR)/dist/visionlake-*.whl | tail -1) \
		SPARK_LOCAL_IP=127.0.0.1 PATH=$(CURDIR)/$(VENV)/bin:$$PATH && \
	$(AIRFLOW_VENV)/bin/airflow db migrate >/dev/null && \
	$(AIRFLOW_VENV)/bin/airflow dags test visionlake_pipeline -c '$(AIRFLOW_DEMO_CONF)'

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

$(BENCH_STAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[bench]'
	touch $(BENCH_STAMP)

# Camera-sized photos (built from scikit-image's photographs) ingested at 224x224 RGB, per stored codec.
bench-photos: $(BENCH_STAMP)
	$(PY) bench/photo_bench.py

# The embedded store: runs in mlflow.db, artifacts under mlartifacts/ (each experiment records its location).
mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts --host 127.0.0.1 --port 5000

$(NOTEBOOKS_STAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[notebooks]'
	touch $(NOTEBOOKS_STAMP)

# JupyterLab on 127.0.0.1 over the demo workspace (run `make demo` first).
notebooks: $(NOTEBOOKS_STAMP)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser notebooks/

# Notebooks are committed without outputs (a test checks); run this before committing one.
notebooks-strip: $(NOTEBOOKS_STAMP)
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb

dist: setup
	$(PIP) wheel --no-deps -w dist .

clean:
	rm -rf lake data mlartifacts mlflow.db checkpoints spark-warehouse build dist lib/*.egg-info bench-results \
		$(AIRFLOW_VENV)
