import os
import subprocess
import sys
from pathlib import Path

import pytest

from webapp.config import (
    ConfigError,
    env_bool,
    env_int,
    env_int_list,
    parse_database_url,
    parse_redis_url,
)

REPO = Path(__file__).resolve().parents[2]


def test_database_url_is_parsed_into_django_settings():
    config = parse_database_url("postgres://satchel:pw@db.internal:5433/mail")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.internal", 5433, "mail")
    assert (config["USER"], config["PASSWORD"]) == ("satchel", "pw")


def test_database_url_with_a_socket_directory():
    config = parse_database_url("postgres://postgres@%2Frun%2Fpostgresql/satchel")
    assert config["HOST"] == "/run/postgresql"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://root@localhost/satchel", "must be a PostgreSQL URL"),
        ("not a url", "must be a PostgreSQL URL"),
        ("postgres://localhost", "names no database"),
        ("postgres://localhost:port/db", "malformed port"),
    ],
)
def test_malformed_database_url_names_the_variable(url, complaint):
    with pytest.raises(ConfigError, match=complaint) as error:
        parse_database_url(url)
    assert str(error.value).startswith("DATABASE_URL")


def test_malformed_redis_url_names_the_variable():
    with pytest.raises(ConfigError, match=r"^REDIS_URL must be a Redis URL"):
        parse_redis_url("http://localhost:6379")
    assert parse_redis_url("redis://127.0.0.1:6379/2") == "redis://127.0.0.1:6379/2"


def test_booleans_are_strict(monkeypatch):
    monkeypatch.setenv("DEBUG", "yes")
    assert env_bool("DEBUG", False) is True
    monkeypatch.setenv("DEBUG", "off")
    assert env_bool("DEBUG", True) is False
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ConfigError, match=r"^DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", False)


def test_integers_are_checked(monkeypatch):
    monkeypatch.setenv("PORT", "80a")
    with pytest.raises(ConfigError, match=r"^PORT='80a' is not a whole number"):
        env_int("PORT", 8000)
    monkeypatch.setenv("PORT", "70000")
    with pytest.raises(ConfigError, match="out of range"):
        env_int("PORT", 8000, maximum=65535)


def _manage_check(tmp_path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    base.update(SATCHEL_DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_up_stops_with_one_line_on_a_malformed_database_url(tmp_path):
    result = _manage_check(tmp_path, DATABASE_URL="mysql://root@localhost/satchel")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "satchel: configuration error: DATABASE_URL must be a PostgreSQL URL like "
        "postgres://user:pass@host:5432/db (got scheme 'mysql')"
    ]


def test_production_requires_its_own_secret_key(tmp_path):
    result = _manage_check(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/satchel")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "satchel: configuration error: SECRET_KEY is not set (required in production: "
        "DATABASE_URL is set and DEBUG is off)"
    ]
    assert not (tmp_path / "secret_key").exists()


def test_launcher_reports_configuration_errors_in_one_line(tmp_path):
    env = {**os.environ, "SATCHEL_DATA_DIR": str(tmp_path), "DEBUG": "perhaps"}
    result = subprocess.run(
        [sys.executable, "-m", "webapp.launcher"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "satchel: configuration error: DEBUG='perhaps' is not a boolean (use true or false)"
    ]


def test_lists_of_numbers_are_checked(monkeypatch):
    monkeypatch.setenv("OUTBOX_RETRY_DELAYS", "60, 300,900")
    assert env_int_list("OUTBOX_RETRY_DELAYS", [1]) == [60, 300, 900]
    monkeypatch.setenv("OUTBOX_RETRY_DELAYS", "60,five")
    with pytest.raises(ConfigError, match=r"^OUTBOX_RETRY_DELAYS='60,five' must be whole"):
        env_int_list("OUTBOX_RETRY_DELAYS", [1])
