"""Production settings and the docker-compose file, checked by the tools users run."""

import base64
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BASE_DIR = Path(__file__).resolve().parent.parent


def test_check_deploy_is_clean_in_production_settings(tmp_path):
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "foodsite.example",
        "FOODSITE_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    env = {**os.environ, "DJANGO_DEBUG": "0", "FOODSITE_HOME": str(tmp_path)}
    env.pop("DJANGO_SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("no compose CLI: `make test` installs Debian's docker-compose")


def resolved_compose(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*compose_command(), "-f", "docker-compose.yaml", "config", *args],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        # The file takes its secrets from the environment and refuses to run without them.
        env={**os.environ, "DJANGO_SECRET_KEY": "s" * 50, "POSTGRES_PASSWORD": "p" * 20},
    )


def test_docker_compose_file_is_valid_and_names_every_process():
    result = resolved_compose("--services")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    procfile = {
        line.split(":")[0]
        for line in (BASE_DIR / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert procfile <= services
    assert {"kafka-1", "kafka-2", "kafka-3", "kafka-ui", "init-kafka", "postgres", "redis"} <= services
    assert "kafka" not in services  # no single broker left over


def test_docker_compose_runs_three_kafka_nodes_with_replication_and_everything_uses_all_three():
    result = resolved_compose()  # anchors and merges resolved by the compose CLI itself
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    nodes = {
        name: {k: str(v) for k, v in services[name]["environment"].items()}
        for name in ("kafka-1", "kafka-2", "kafka-3")
    }

    assert {env["KAFKA_NODE_ID"] for env in nodes.values()} == {"1", "2", "3"}
    for name, env in nodes.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093", name
        assert env["KAFKA_ADVERTISED_LISTENERS"].startswith(f"PLAINTEXT://{name}:9092,"), name
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3", name
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", name
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false", name
        for internal in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"):
            assert env[f"KAFKA_{internal}_REPLICATION_FACTOR"] == "3", (name, internal)
        for internal in ("TRANSACTION_STATE_LOG", "SHARE_COORDINATOR_STATE_TOPIC"):
            assert env[f"KAFKA_{internal}_MIN_ISR"] == "2", (name, internal)
    cluster_ids = {env["CLUSTER_ID"] for env in nodes.values()}
    assert len(cluster_ids) == 1
    # What `kafka-storage random-uuid` prints; anything else and the image cannot format.
    assert len(base64.urlsafe_b64decode(cluster_ids.pop() + "==")) == 16
    assert len({str(services[name]["ports"]) for name in nodes}) == 3  # no port twice
    assert len({str(services[name]["volumes"]) for name in nodes}) == 3  # a volume of its own each

    everything = "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    app = [name for name, service in services.items() if "KAFKA_BOOTSTRAP_SERVERS" in service.get("environment", {})]
    assert {"web", "deliveries", "stats", "notifications", "recommendations", "worker", "init-kafka"} <= set(app)
    for name in app:
        assert services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == everything, name
        assert str(services[name]["environment"]["KAFKA_REPLICATION_FACTOR"]) == "3", name
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == everything
    assert set(services["init-kafka"]["depends_on"]) >= set(nodes)
