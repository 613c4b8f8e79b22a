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

.PHONY: setup setup-current test-current test-fast demo-current lock-current airflow-setup demo test test-unit cluster-up cluster-down cluster-test airflow-test bench-ingest \
	bench-train bench-gan bench-anomaly bench-score bench-engines bench-photos bench-cluster bench-ship bench-delta-session bench-lake dist cluster-env lock clean mlflow-ui \
	notebooks notebooks-strip airflow-demo browser

setup: $(STAMP)

$(STAMP): constraints.txt pyproject.toml setup.py
	@command -v java >/dev/null || { echo "Java 17 is required for Spark: install openjdk-17-jre-headless"; exit 1; }
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (the pinned stack is for Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt pip setuptools wheel
	$(PIP) install --no-build-isolation -c constraints.txt -e '.[cpu,test]'
	$(HOROVOD_BUILD) $(PIP) install --no-build-isolation -c constraints.txt horovod==0.28.1
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -c "import horovod.tensorflow as hvd; assert hvd.gloo_built(), 'Horovod was built without Gloo'"
	$(VENV)/bin/visionlake jars --fetch >/dev/null
	touch $(STAMP)

# The current stack beside the pinned one: Python 3.12, TensorFlow with Keras 3, numpy 2, current pyarrow, locked in
# constraints-current.txt. No Horovod or petastorm there: it trains with train.engine=tf_distribute and reads with
# train.reader=arrow (conf/current.yaml sets both).
# python3.12 on PATH, else a pyenv-installed 3.12 (this workplace's machines have one but do not activate it).
PYTHON_CURRENT ?= $(or $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null),\
	$(shell ls -d $(HOME)/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n 1),python3.12)
CURRENT_VENV := .venv-current
CURRENT_PY := $(CURRENT_VENV)/bin/python
CURRENT_STAMP := $(CURRENT_VENV)/.setup-stamp

setup-current: $(CURRENT_STAMP)

$(CURRENT_STAMP): constraints-current.txt pyproject.toml setup.py
	@command -v java >/dev/null || { echo "Java 17 is required for Spark: install openjdk-17-jre-headless"; exit 1; }
	@command -v $(PYTHON_CURRENT) >/dev/null || { echo "$(PYTHON_CURRENT) is required for the current stack" \
		"(make PYTHON_CURRENT=/path/to/python3.12 setup-current)"; exit 1; }
	test -x $(CURRENT_PY) || $(PYTHON_CURRENT) -m venv $(CURRENT_VENV)
	$(CURRENT_PY) -m pip --disable-pip-version-check -q install -c constraints-current.txt pip setuptools wheel
	$(CURRENT_PY) -m pip --disable-pip-version-check -q install --no-build-isolation -c constraints-current.txt \
		-e '.[current,test]'
	$(CURRENT_VENV)/bin/visionlake jars --fetch >/dev/null
	touch $(CURRENT_STAMP)

# The unit suite and the current stack's integration module (the whole pipeline on tf_distribute + arrow); the
# tests that need Horovod or petastorm skip there and say so.
CURRENT_TESTS = $(CURRENT_PY) -m pytest --junitxml=$(REPORTS)/current.xml tests/unit \
	tests/integration/test_current_stack.py
test-current: setup-current
	$(CURRENT_TESTS) $(PYTEST_PARALLEL)

demo-current: setup-current
	$(CURRENT_VENV)/bin/visionlake demo --conf conf/current.yaml

# Regenerates constraints-current.txt from the tested .venv-current.
lock-current: setup-current
	$(CURRENT_PY) .ci/lock.py --current

airflow-setup: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): constraints-airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints-airflow.txt \
		apache-airflow apache-airflow-providers-apache-spark
	touch $(AIRFLOW_STAMP)

demo: setup
	$(VENV)/bin/visionlake demo

# A real headless browser for the test that opens the demo's HTML report: Chromium from the system packages. Where
# it cannot be installed (not root, no apt-get), that test skips and says so, as the cluster test does without root.
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && \
			  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } || \
			echo "could not install Chromium; the report test will skip: sudo apt-get install chromium"; \
		else echo "Chromium is missing and needs root to install; the report test will skip:" \
			"sudo apt-get install chromium (or your system's package)"; fi; }

# The whole suite: the Airflow DAG run and the two-node cluster run (tests/cluster) included; the README's cluster
# commands ship dist/'s wheel and packed environment. Each stack in turn runs on two pytest-xdist workers (a
# module's tests stay together, tests/conftest.py). Not side by side: the current stack beside the pinned run slowed
# the cluster run, the longest chain, and the pinned run took 22.8 min instead of 17.9 (docs/test-suite.md). Each run
# writes JUnit XML and per-test durations to build/test-reports/; the summary at the end prints the minutes and the
# 25 slowest tests (.ci/test_report.py). The summary prints even when a run failed, and the exit status is the runs'
# own.
REPORTS := build/test-reports
PYTEST_PARALLEL := -n 2 --dist loadgroup --no-loadscope-reorder
# Setup runs in two lanes (make -j2): the venvs install independently (editable installs write nothing into the
# tree, and dist builds from a copy); the longest chain, .venv -> dist -> the packed environment, starts first.
TEST_SETUP := setup setup-current cluster-env airflow-setup browser
test:
	$(MAKE) --no-print-directory -j2 -Otarget $(TEST_SETUP)
	rm -rf $(REPORTS)
	status=0; $(PY) -m pytest $(PYTEST_PARALLEL) --junitxml=$(REPORTS)/pinned.xml tests || status=$$?; \
	$(CURRENT_TESTS) $(PYTEST_PARALLEL) || status=$$?; \
	$(PY) .ci/test_report.py $(REPORTS); exit $$status

# The inner loop, a few minutes: the unit tests and the integration tests not marked slow (no cluster, training,
# demo or full DAG run), on the pinned stack.
test-fast: setup
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow" --junitxml=$(REPORTS)/fast.xml tests

# A two-node Spark standalone cluster on this machine (tests/cluster/harness.py): master and two 1-core workers on
# 127.0.0.1, each worker in its own mount namespace (private /tmp, this checkout hidden), and an MLflow tracking
# server with artifact serving. Needs root for `unshare -m`. Stop it with `make cluster-down`.
cluster-up: setup
	$(PY) -m tests.cluster.harness up

cluster-down:
	$(PY) -m tests.cluster.harness down

# The whole pipeline and the Airflow DAG on that cluster, shipped as users ship it (packed env + wheel).
cluster-test: setup airflow-setup cluster-env dist browser
	$(PY) -m pytest tests/cluster

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

# The pipeline on the two-node cluster vs local[2], in one run (needs root for the cluster's mount namespaces).
bench-cluster: setup cluster-env
	$(PY) bench/cluster_bench.py

# The packed environment's cost per application on the two-node cluster: the slim archive vs the whole venv.
bench-ship: setup cluster-env
	$(PY) bench/ship_bench.py

# A new session's first Delta Lake write, read and file plan: visionlake's session settings vs Delta's defaults.
bench-delta-session: setup
	$(PY) bench/delta_session_bench.py

bench-lake: setup
	$(PY) bench/lake_bench.py

bench-train: setup
	$(PY) bench/train_bench.py

bench-gan: setup
	$(PY) bench/gan_bench.py --keep bench-results/gan

bench-anomaly: setup
	$(PY) bench/anomaly_bench.py

bench-score: setup
	$(PY) bench/score_bench.py

# Both engines x both readers on the pinned stack, and the current stack's ingest/train/score figures beside them.
bench-engines: setup setup-current
	$(PY) bench/engine_bench.py

$(BENCH_STAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[bench]'
	touch $(BENCH_STAMP)

# Camera-sized photos (built from scikit-image's photographs) ingested at 224x224 RGB, per stored codec.
bench-photos: $(BENCH_STAMP)
	$(PY) bench/photo_bench.py

# The embedded store: runs in mlflow.db, artifacts under mlartifacts/ (each experiment records its location).
# Without MLflow's server-side job runner (GenAI jobs visionlake never uses: eight processes busy while idle).
mlflow-ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
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

# Regenerates constraints.txt, the full lock (every transitive package), from the tested .venv (.ci/lock.py).
lock: setup
	$(PY) .ci/lock.py

# Built from a copy of the sources: a build in the tree writes build/lib and an egg-info there, which would race with
# the other setup lanes of `make test` and would pack whatever an earlier build left (moved modules included).
WHEEL_SOURCES := setup.py pyproject.toml README.md lib
WHEEL_SRC := build/wheel-src
# Beside the wheel, Delta Lake's jars for `spark-submit --jars 'dist/jars/*.jar'` (Spark expands the glob).
JARS := $(VENV)/share/visionlake/jars
dist: setup
	rm -rf $(WHEEL_SRC) && mkdir -p $(WHEEL_SRC) dist
	tar -c --exclude='*.egg-info' --exclude=__pycache__ $(WHEEL_SOURCES) | tar -x -C $(WHEEL_SRC)
	$(PIP) wheel --no-deps --no-build-isolation -w dist $(WHEEL_SRC)
	rm -rf dist/jars && cp -r $(JARS) dist/jars

# The packed job environment that cluster runs ship with `spark-submit --archives dist/visionlake-env.tar.gz#environment`
# (executors: spark.pyspark.python=./environment/bin/python). It holds the job stack from the lock (TensorFlow from
# the TF_EXTRA extra: cpu, or gpu on a CUDA build host with HOROVOD_GPU_OPERATIONS=NCCL) and Horovod; the code ships
# separately as the wheel (--py-files), so it is rebuilt only when the lock or the dependencies change.
TF_EXTRA ?= cpu
# GPU executors: Horovod's allreduce on NCCL, built from source on a host with the CUDA toolkit (nvcc) and NCCL.
# (--no-cache-dir: never reuse the CPU build from pip's wheel cache.)
HOROVOD_GPU_ENV := $(if $(filter gpu,$(TF_EXTRA)),HOROVOD_GPU_OPERATIONS=NCCL)
HOROVOD_GPU_PIP := $(if $(filter gpu,$(TF_EXTRA)),--no-cache-dir)
CLUSTER_ENV := dist/visionlake-env.tar.gz
CLUSTER_VENV := build/cluster-env
# What no executor ever loads, left out of the archive every application ships and each executor unpacks: Spark's
# jars (executors run the node's Spark; its pyspark.zip comes first on the Python workers' path), C++ headers and
# libclang (for building TensorFlow ops), the MLflow UI, TensorBoard's server, test suites. docs/test-suite.md has
# the archive's size and unpack time before and after.
SITE := lib/python3.11/site-packages
CLUSTER_ENV_EXCLUDE := $(SITE)/pyspark/jars/* $(SITE)/tensorflow/include/* $(SITE)/clang/* \
	$(SITE)/mlflow/server/js/* $(SITE)/tensorboard_data_server/* $(SITE)/pandas/tests/* $(SITE)/*/tests/* \
	$(SITE)/*/*/tests/*
cluster-env: $(CLUSTER_ENV)

# The dependencies come from dist/'s wheel (no build in the tree, see dist).
$(CLUSTER_ENV): constraints.txt pyproject.toml | $(STAMP) dist
	rm -rf $(CLUSTER_VENV) && $(PYTHON) -m venv $(CLUSTER_VENV)
	$(CLUSTER_VENV)/bin/python -m pip --disable-pip-version-check -q install -c constraints.txt pip setuptools wheel
	$(CLUSTER_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-build-isolation -c constraints.txt \
		"$$(ls dist/visionlake-*.whl | tail -n 1)[$(TF_EXTRA)]"
	$(CLUSTER_VENV)/bin/python -m pip --disable-pip-version-check -q uninstall -y visionlake
	$(HOROVOD_BUILD) $(HOROVOD_GPU_ENV) $(CLUSTER_VENV)/bin/python -m pip --disable-pip-version-check -q install \
		--no-build-isolation $(HOROVOD_GPU_PIP) -c constraints.txt horovod==0.28.1
	TF_CPP_MIN_LOG_LEVEL=2 $(CLUSTER_VENV)/bin/python -c \
		"import horovod.tensorflow as hvd, petastorm, mlflow; assert hvd.gloo_built()"
	mkdir -p $(CLUSTER_VENV)/share/visionlake && rm -rf $(CLUSTER_VENV)/share/visionlake/jars && \
		cp -r $(JARS) $(CLUSTER_VENV)/share/visionlake/jars
	mkdir -p dist && $(VENV)/bin/venv-pack --quiet --force -p $(CLUSTER_VENV) -o $(CLUSTER_ENV) \
		$(foreach pattern,$(CLUSTER_ENV_EXCLUDE),--exclude '$(pattern)')
	@echo "packed job environment: $(CLUSTER_ENV) ($$(du -h $(CLUSTER_ENV) | cut -f1))"

clean:
	rm -rf lake data mlartifacts mlflow.db checkpoints spark-warehouse build dist lib/*.egg-info bench-results \
		$(AIRFLOW_VENV) $(CURRENT_VENV)
