# Two entry points (see README): `make demo` and `make test`. Environments are
# created with uv from the pinned files and rebuilt when those files change.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
UV := $(VENV)/bootstrap/bin/uv
PIPELINE := $(VENV)/pipeline
PIPELINE_DIR := images/pipeline
SERVING := $(VENV)/serving
AIRFLOW := $(VENV)/airflow
SERVING_DIR := images/serving
RUN := .run

.PHONY: help system-deps test test-pipeline test-serving test-airflow bench-serving bench-serving-profile bench-serving-inprocess bench-serving-categorical bench-adaptation demo up down envs lock compile-pipeline bench-pipeline bench-wide lint clean manifests k8s-rules test-deploy images screenshots configuration-docs

help:
	@echo "make demo    run the continuous-training loop on the local target"
	@echo "make test    create the environments and run the whole test suite"
	@echo "make up      start the local stack without the demo's story (keeps .run/'s data); prints pages and logins"
	@echo "make down    stop every service the demo or make up started"
	@echo "make bench-pipeline   stage benchmark (10k to 10M rows, ~10 min) against a bare-script floor"
	@echo "make bench-wide       the same on 100 features (20 categorical, 5 % missing), 1M and 10M rows"
	@echo "make bench-serving    serving throughput: ours vs bare KServe vs MLServer+MLflow vs an ASGI floor"
	@echo "make bench-serving-profile  where a served request's time goes (py-spy) and the GC pauses"
	@echo "make bench-serving-inprocess  the server's own cost per request, in-process, beside a constant ASGI app"
	@echo "make bench-serving-categorical  a hist-gradient-boosting model with categorical (BYTES) inputs: the server's time beyond the model's predict, in-process and under wrk"
	@echo "make bench-adaptation does the loop keep the model good? drift streams, baselines, goals (~20 min)"
	@echo "make manifests        the Kubernetes objects the DAG creates for a sample run, in build/manifests/"
	@echo "make images           build the images (pipeline, serving, mlflow, airflow) with the checkout's Docker engine"

$(UV): images/bootstrap-requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)/bootstrap
	$(VENV)/bootstrap/bin/pip install --quiet --disable-pip-version-check --require-hashes -r images/bootstrap-requirements.txt
	touch $@  # pip leaves an installed uv as it was: the target's time is the install's

# --compile-bytecode: the machines set PYTHONDONTWRITEBYTECODE, and importing
# mlflow/sklearn from source costs ~3 s per process otherwise.
$(PIPELINE)/.installed: $(PIPELINE_DIR)/requirements.txt $(PIPELINE_DIR)/requirements-dev.txt $(PIPELINE_DIR)/pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(PIPELINE)
	VIRTUAL_ENV=$(PIPELINE) $(UV) pip install --quiet --compile-bytecode --require-hashes -r $(PIPELINE_DIR)/requirements.txt -r $(PIPELINE_DIR)/requirements-dev.txt
	VIRTUAL_ENV=$(PIPELINE) $(UV) pip install --quiet --no-deps -e $(PIPELINE_DIR)
	touch $@

# The server loads models under the pipeline's loading policy (mlpipeline.model_format: PyYAML and skops
# only): the pipeline package without its dependencies, as the Airflow environment has it.
$(SERVING)/.installed: $(SERVING_DIR)/requirements.txt $(SERVING_DIR)/requirements-dev.txt $(SERVING_DIR)/pyproject.toml $(PIPELINE_DIR)/pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(SERVING)
	VIRTUAL_ENV=$(SERVING) $(UV) pip install --quiet --compile-bytecode --require-hashes -r $(SERVING_DIR)/requirements.txt -r $(SERVING_DIR)/requirements-dev.txt
	VIRTUAL_ENV=$(SERVING) $(UV) pip install --quiet --no-deps -e $(SERVING_DIR)
	VIRTUAL_ENV=$(SERVING) $(UV) pip install --quiet --no-deps -e $(PIPELINE_DIR)
	touch $@

# The Airflow side reads the training decision through the pipeline's contract module, and writes a
# served model directory as the pipeline does (mlpipeline.contracts, mlpipeline.served_model_dir:
# standard library only): the package without its dependencies.
$(AIRFLOW)/.installed: requirements.txt requirements-dev.txt $(PIPELINE_DIR)/pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(AIRFLOW)
	VIRTUAL_ENV=$(AIRFLOW) $(UV) pip install --quiet --compile-bytecode --require-hashes -r requirements.txt -r requirements-dev.txt
	VIRTUAL_ENV=$(AIRFLOW) $(UV) pip install --quiet --no-deps -e $(PIPELINE_DIR)
	touch $@

envs: $(PIPELINE)/.installed $(SERVING)/.installed $(AIRFLOW)/.installed

# The targets that start the checkout's Docker engine (the image builds, the emulated cluster's pods) stop
# it when they end, passed, failed or interrupted, with its containers and mounts (else `rm -rf` of the
# clone fails on them): scripts/dockerd.sh around. KEEP_DOCKERD=1 leaves it running, as does an engine
# that was running before.
WITH_ENGINE := scripts/dockerd.sh around
# What `make test` runs under it (tests/deploy/test_dockerd.py runs the recipe with a stand-in).
TEST_SUITE := bash scripts/test.sh

# The whole suite (scripts/test.sh): each layer in its own environment, the images built while the
# pipeline and serving tests run, the Airflow tests that need no image beside the others.
test: system-deps envs
	$(WITH_ENGINE) $(TEST_SUITE)

lint: $(PIPELINE)/.installed
	$(PIPELINE)/bin/ruff check .

test-pipeline: $(PIPELINE)/.installed
	$(PIPELINE)/bin/python -m pytest tests/pipeline $(PYTEST_ARGS)

test-serving: $(PIPELINE)/.installed $(SERVING)/.installed
	$(SERVING)/bin/python -m pytest tests/serving $(PYTEST_ARGS)

# Debian's Prometheus, Alertmanager and Pushgateway (promtool comes with prometheus), PostgreSQL for
# the live stack's databases, and Chromium for the browser tests.
system-deps:
	@command -v prometheus-alertmanager >/dev/null && command -v prometheus-pushgateway >/dev/null \
	  && command -v promtool >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  && command -v chromium >/dev/null && test -x /usr/sbin/nginx || { apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus \
	  prometheus-alertmanager prometheus-pushgateway postgresql chromium nginx-light; }

# The kubernetes target's tests run every pod as a container of the images: built first (inside the
# engine's lifetime, not as a prerequisite, which would start it before `around` looks).
test-airflow: system-deps $(PIPELINE)/.installed $(SERVING)/.installed $(AIRFLOW)/.installed
	$(WITH_ENGINE) bash -c 'scripts/images.sh build && $(AIRFLOW)/bin/python -m pytest tests/airflow -p no:cacheprovider $(PYTEST_ARGS)'

# The README's screenshots: the browser test on a live stack, saving into docs/img/.
screenshots: system-deps $(PIPELINE)/.installed $(SERVING)/.installed $(AIRFLOW)/.installed
	MLOPS_SCREENSHOTS=docs $(AIRFLOW)/bin/python -m pytest tests/airflow/test_live_stack.py -p no:cacheprovider \
	  -k "backfill_replays or ui_as_a_user"

# The deployment assets (k8s-yaml/, helm-values/, images/, docs/) against the published schemas.
test-deploy: system-deps $(AIRFLOW)/.installed
	$(WITH_ENGINE) bash -c 'scripts/images.sh build && $(AIRFLOW)/bin/python -m pytest tests/deploy -p no:cacheprovider $(PYTEST_ARGS)'

# The four images, plus the test-only storage initializer, with Debian's Docker engine (started under
# .run/docker); a local Python base is made from Debian's archive where registry bases cannot be pulled.
# The engine keeps running afterwards, to run the images with (`scripts/dockerd.sh stop` stops it).
images:
	scripts/images.sh build

demo: system-deps envs
	bash scripts/demo.sh

# The local stack without the demo's story, keeping the run folder's data: prints the pages and logins.
up: system-deps envs
	bash scripts/up.sh

down:
	bash scripts/services.sh stop

# The kubernetes target's objects for a sample run, for review (like `helm template`).
manifests: $(AIRFLOW)/.installed
	rm -rf build/manifests
	cd plugins && AIRFLOW_HOME=$(CURDIR)/$(RUN)/airflow-manifests AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  ../$(AIRFLOW)/bin/python -m mlops.manifests $(CURDIR)/build/manifests

# docs/configuration.md's tables of settings and connections, from plugins/mlops/settings.py.
configuration-docs: $(AIRFLOW)/.installed
	$(AIRFLOW)/bin/python scripts/configuration_docs.py

# The rule file the local Prometheus loads, from its template and the thresholds in plugins/mlops/settings.py;
# then the cluster's PrometheusRule, from that same file.
k8s-rules: $(AIRFLOW)/.installed
	$(AIRFLOW)/bin/python scripts/alert_rules.py
	$(AIRFLOW)/bin/python scripts/prometheus_rule.py

compile-pipeline: $(PIPELINE)/.installed
	$(PIPELINE)/bin/mlpipeline compile

bench-pipeline: $(PIPELINE)/.installed
	$(PIPELINE)/bin/python benchmarks/pipeline_stages.py $(BENCH_ARGS)

# BENCH_ARGS="--sizes 10000 100000" for other sizes
bench-wide: $(PIPELINE)/.installed
	$(PIPELINE)/bin/python benchmarks/pipeline_stages.py --shape wide $(BENCH_ARGS)

# The adaptation benchmark's environment: the pipeline's, plus river (streams, Adaptive Random Forest) and
# matplotlib (plots), which no image has.
$(VENV)/adaptation/.installed: $(PIPELINE_DIR)/requirements.txt benchmarks/adaptation/requirements.txt $(PIPELINE_DIR)/pyproject.toml | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)/adaptation
	VIRTUAL_ENV=$(VENV)/adaptation $(UV) pip install --quiet --compile-bytecode --require-hashes \
	  -r $(PIPELINE_DIR)/requirements.txt -r benchmarks/adaptation/requirements.txt
	VIRTUAL_ENV=$(VENV)/adaptation $(UV) pip install --quiet --no-deps -e $(PIPELINE_DIR)
	touch $@

# Prequential evaluation of the loop on river's drift streams against baselines; prints each goal's verdict and
# writes benchmarks/results/adaptation.md and a plot per stream. BENCH_ARGS=--fresh-seeds draws new seeds.
bench-adaptation: $(PIPELINE)/.installed $(VENV)/adaptation/.installed  # services.sh runs the pipeline environment's mlflow
	$(VENV)/adaptation/bin/python benchmarks/adaptation/bench.py $(BENCH_ARGS)

$(VENV)/mlserver/.installed: benchmarks/serving/requirements-mlserver.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)/mlserver
	VIRTUAL_ENV=$(VENV)/mlserver $(UV) pip install --quiet --compile-bytecode --require-hashes -r $<
	touch $@

bench-serving: $(PIPELINE)/.installed $(SERVING)/.installed $(VENV)/mlserver/.installed
	command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
	$(SERVING)/bin/python benchmarks/serving_throughput.py $(BENCH_ARGS)

# The model server's ASGI app called in-process (no HTTP), beside a constant ASGI app: its own cost per request.
bench-serving-inprocess: $(PIPELINE)/.installed $(SERVING)/.installed
	$(SERVING)/bin/python benchmarks/serving_inprocess.py $(BENCH_ARGS)

# A hist-gradient-boosting classifier with 8 numeric and 4 categorical (BYTES) inputs: the server's time beyond the
# model's own predict per request, in-process (beside a constant ASGI app) and under wrk (beside the floor server).
bench-serving-categorical: $(PIPELINE)/.installed $(SERVING)/.installed
	command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
	$(SERVING)/bin/python benchmarks/serving_categorical.py $(BENCH_ARGS)

# Where a served request's time goes (py-spy, from the serving environment's dev tools).
bench-serving-profile: $(PIPELINE)/.installed $(SERVING)/.installed
	command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; }
	$(SERVING)/bin/python benchmarks/serving_profile.py $(BENCH_ARGS)

lock: | $(UV)
	$(UV) pip compile requirements.in --python-version 3.11 --no-header --generate-hashes --annotation-style line -o requirements.txt
	$(UV) pip compile requirements-dev.in -c requirements.txt --python-version 3.11 --no-header --generate-hashes \
	  --annotation-style line -o requirements-dev.txt
	cd $(SERVING_DIR) && ../../$(UV) pip compile pyproject.toml --python-version 3.11 --no-header --generate-hashes \
	  --annotation-style line -o requirements.txt && ../../$(UV) pip compile requirements-dev.in \
	  -c requirements.txt --python-version 3.11 --no-header --generate-hashes --annotation-style line -o requirements-dev.txt
	$(UV) pip compile images/mlflow/requirements.in --python-version 3.11 --no-header --generate-hashes --annotation-style line \
	  -o images/mlflow/requirements.txt
	cd $(PIPELINE_DIR) && ../../$(UV) pip compile pyproject.toml --python-version 3.11 --no-header --generate-hashes \
	  --annotation-style line -o requirements.txt && ../../$(UV) pip compile requirements-dev.in \
	  -c requirements.txt --python-version 3.11 --no-header --generate-hashes --annotation-style line -o requirements-dev.txt
	$(UV) pip compile images/bootstrap-requirements.in --python-version 3.11 --no-header --generate-hashes \
	  --annotation-style line -o images/bootstrap-requirements.txt
	cd tests/cluster/storage-initializer && ../../../$(UV) pip compile requirements.in --python-version 3.11 --no-header \
	  --generate-hashes --annotation-style line -o requirements.txt && ../../../$(UV) pip compile \
	  requirements-nodeps.in --no-deps --python-version 3.11 --no-header --generate-hashes --annotation-style line \
	  -o requirements-nodeps.txt
	$(UV) pip compile benchmarks/adaptation/requirements.in -c $(PIPELINE_DIR)/requirements.txt --python-version 3.11 \
	  --no-header --generate-hashes --annotation-style line -o benchmarks/adaptation/requirements.txt
	$(UV) pip compile benchmarks/serving/requirements-mlserver.in --python-version 3.11 --no-header --generate-hashes \
	  --annotation-style line -o benchmarks/serving/requirements-mlserver.txt

clean:
	rm -rf $(VENV) $(RUN) build
