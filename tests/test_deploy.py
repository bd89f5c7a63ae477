"""Production settings and the docker-compose file, checked by the tools users run."""

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_docker_compose_file_is_valid_and_names_every_process():
    result = subprocess.run(
        [*compose_command(), "-f", "docker-compose.yaml", "config", "--services"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        # The file takes its secrets from the environment and refuses to run without them.
        env={**os.environ, "DJANGO_SECRET_KEY": "s" * 50, "POSTGRES_PASSWORD": "p" * 20},
    )
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    procfile = {
        line.split(":")[0]
        for line in (BASE_DIR / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert procfile <= services
    assert {"kafka", "kafka-ui", "init-kafka", "postgres", "redis"} <= services
