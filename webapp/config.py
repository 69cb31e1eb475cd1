"""Typed readers for environment variables.

Every setting Satchel reads from the environment goes through these helpers, so a malformed
value stops start-up with one line that names the variable instead of a traceback deep in
Django or a silent fallback.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ImproperlyConfigured):
    """A setting is missing or malformed; the message names the variable."""


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value.strip()


def env_required(name: str, why: str) -> str:
    value = env_str(name)
    if not value:
        raise ConfigError(f"{name} is not set ({why})")
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use true or false)")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int = 2**31) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name}={number} is out of range ({minimum} to {maximum})")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_int_list(name: str, default: list[int]) -> list[int]:
    """Comma-separated whole numbers, e.g. OUTBOX_RETRY_DELAYS=60,300,900."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"{name}={value!r} must be whole numbers separated by commas") from None


def parse_database_url(url: str, *, name: str = "DATABASE_URL") -> dict:
    """Parse a PostgreSQL URL into a Django DATABASES entry, refusing anything else."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ConfigError(
            f"{name} must be a PostgreSQL URL like postgres://user:pass@host:5432/db "
            f"(got scheme {parts.scheme!r})"
        )
    try:
        parts.port  # noqa: B018 — raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name} has a malformed port") from None
    try:
        config = environ.Env.db_url_config(url)
    except Exception as exc:  # django-environ raises assorted errors on bad URLs
        raise ConfigError(f"{name} is malformed: {exc}") from None
    if not config.get("NAME"):
        raise ConfigError(f"{name} names no database (add /dbname to the URL)")
    if not config.get("HOST"):
        raise ConfigError(f"{name} names no host")
    # A Unix socket directory travels percent-encoded in the host part (%2Frun%2Fpostgresql).
    config["HOST"] = unquote(config["HOST"])
    return config


def parse_redis_url(url: str, *, name: str = "REDIS_URL") -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"{name} must be a Redis URL like redis://host:6379/0")
    try:
        parts.port  # noqa: B018 — raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"{name} has a malformed port") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(f"{name} names no host")
    return url
