"""Settings for every environment, read from environment variables with embedded defaults.

With no variable set, Gatehouse runs on SQLite with a file-system Celery broker and a
database-backed channel layer (the "embedded default"). ``REDIS_URL`` switches the broker, cache
and channel layer to Redis; ``DATABASE_URL`` selects PostgreSQL. ``GATEHOUSE_ENV=production``
turns on the hardened settings checked by ``manage.py check --deploy``.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from gatehouse.env import env_bool, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("GATEHOUSE_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

GATEHOUSE_ENV = env_str("GATEHOUSE_ENV", "development")
if GATEHOUSE_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("GATEHOUSE_ENV must be 'development' or 'production'")
PRODUCTION = GATEHOUSE_ENV == "production"
TESTING = "pytest" in sys.modules or env_bool("GATEHOUSE_TESTING", False)

DEBUG = env_bool("DEBUG", False)


def _development_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept under var/ in development: created once, readable by its owner only from
    the start (O_EXCL: processes starting together agree on the first one written)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(make() + "\n")
    return path.read_text(encoding="utf-8").strip()


def _secret_key() -> str:
    key = env_secret("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production")
    # Development: a random key kept beside the database, so sessions survive restarts.
    return _development_secret(VAR_DIR / "secret_key", lambda: secrets.token_urlsafe(64))


SECRET_KEY = _secret_key()
# Keyed HMAC for data-subject pseudonyms; kept apart from SECRET_KEY so either can rotate alone.
PSEUDONYM_KEY = env_secret("PSEUDONYM_KEY") or SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "channels_lite",
    "ninja",
    "guardian",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "auditlog",
    "axes",
    "django_htmx",
    "template_partials",
    "csp",
    "gatehouse",
    "apps.registry",
    "apps.inference",
    "apps.compliance",
    "apps.monitoring",
]

MIDDLEWARE = [
    "gatehouse.middleware.RequestIDMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "gatehouse.middleware.NulCharacterMiddleware",
    # Header middleware early, so that responses made by later middleware carry them too.
    "csp.middleware.CSPMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "gatehouse.middleware.SessionTimeoutMiddleware",
    "gatehouse.middleware.OTPEnforcementMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gatehouse.urls"
WSGI_APPLICATION = "gatehouse.wsgi.application"
ASGI_APPLICATION = "gatehouse.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "gatehouse.context_processors.platform",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env_secret("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'gatehouse.sqlite3'}"
_db: dict[str, Any] = dict(dj_database_url.parse(DATABASE_URL, conn_max_age=0))
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
        "PRAGMA busy_timeout=20000;",
    }
    # A file, not ":memory:", so that tests can share the database with a real worker process.
    _db["TEST"] = {"NAME": str(VAR_DIR / "test-gatehouse.sqlite3")}
# Persistent connections: a new SQLite connection reloads the schema and prepares every
# statement again (several ms per request), a new PostgreSQL one costs a backend process.
# Tests close connections at once, so that the test database can be dropped afterwards.
_db["CONN_MAX_AGE"] = 0 if TESTING else env_int("DATABASE_CONN_MAX_AGE", 60)
# Threads per web process running HTTP requests (gatehouse/asgi.py); each keeps a connection.
HTTP_THREADS = env_int("GATEHOUSE_HTTP_THREADS", 4)
_db["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, cache, channel layer -------------------------------------------------------
REDIS_URL = env_secret("REDIS_URL") or ""

if REDIS_URL:
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    # redis-py 8's 5 s socket timeout equals channels-redis's blocking read: raise it.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": env_str("CHANNEL_LAYER_PREFIX", "gatehouse"),
            },
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "gatehouse_cache",
        }
    }
    # Crosses processes (web <-> Celery worker) through the database; no server to install.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_lite.layers.core.SQLiteChannelLayer",
            "CONFIG": {"database": "default", "expiry": 60, "capacity": 500},
        }
    }

# --- Celery ------------------------------------------------------------------------------------
CELERY_DIR = VAR_DIR / "celery"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"visibility_timeout": 3600}
else:
    for _sub in ("queue", "processed", "results", "control"):
        (CELERY_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DIR / "queue"),
        "data_folder_out": str(CELERY_DIR / "queue"),
        "processed_folder": str(CELERY_DIR / "processed"),
        "control_folder": str(CELERY_DIR / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"file://{CELERY_DIR / 'results'}"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = timedelta(hours=1)
CELERY_BEAT_SCHEDULE_FILENAME = str(CELERY_DIR / "beat-schedule")
# Queues: deployments run separate worker groups (deploy/k8s/workers.yaml); empty means the
# default queue, which the single worker of `make run` consumes.
BATCH_QUEUE = env_str("BATCH_QUEUE", "")
EXPLANATION_QUEUE = env_str("EXPLANATION_QUEUE", "")
CELERY_TASK_ROUTES: dict[str, dict[str, str]] = {
    task: {"queue": queue}
    for task, queue in (
        ("inference.batch_run", BATCH_QUEUE),
        ("compliance.explain_decisions", EXPLANATION_QUEUE),
    )
    if queue
}
CELERY_BEAT_SCHEDULE: dict[str, Any] = {
    "warn-expiring-api-keys": {
        "task": "gatehouse.tasks.warn_expiring_api_keys",
        "schedule": timedelta(hours=1),
    },
    # Batch jobs whose worker died (SIGKILL loses its message on the file-system broker).
    "batch-resume-stalled": {
        "task": "inference.batch_resume_stalled",
        "schedule": timedelta(seconds=30),
    },
    "purge-idempotent-replies": {
        "task": "inference.purge_idempotent_replies",
        "schedule": timedelta(hours=1),
    },
    "erasure-deadlines": {"task": "compliance.erasure_deadlines", "schedule": timedelta(hours=1)},
    "resume-erasures": {"task": "compliance.resume_erasures", "schedule": timedelta(minutes=1)},
    "resume-explanations": {
        "task": "compliance.resume_explanations",
        "schedule": timedelta(minutes=1),
    },
    "bias-reports": {"task": "compliance.scheduled_bias_reports", "schedule": timedelta(days=1)},
    "retention-purge": {"task": "compliance.retention_purge", "schedule": timedelta(hours=6)},
    "drift-check": {"task": "monitoring.drift_check", "schedule": timedelta(minutes=1)},
    "alert-rules": {"task": "monitoring.evaluate_alert_rules", "schedule": timedelta(minutes=1)},
}
# --- Transparency log of decisions (gatehouse/tlog, docs/inference.md "The decision log") ----
# The Ed25519 signing key of checkpoints and promises, as a C2SP note signer key
# (PRIVATE+KEY+<origin>+<key id>+<base64>); its name is the log's origin. Required in
# production; in development one is generated under var/ with LOG_ORIGIN as its name.
LOG_ORIGIN = env_str("LOG_ORIGIN", "gatehouse.local/decisions")


def _log_signing_key() -> str:
    key = env_secret("LOG_SIGNING_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured(
            "LOG_SIGNING_KEY (or LOG_SIGNING_KEY_FILE) must be set in production "
            "(manage.py log_keygen prints a new one)"
        )
    from gatehouse.tlog.verify import SignerKey

    return _development_secret(
        VAR_DIR / "log-signing-key", lambda: SignerKey.generate(LOG_ORIGIN).text()
    )


LOG_SIGNING_KEY = _log_signing_key()
# Verifier keys of earlier signing keys (comma-separated), so old checkpoints keep verifying.
LOG_PREVIOUS_PUBLIC_KEYS = env_list("LOG_PREVIOUS_PUBLIC_KEYS", [])
# Longest time from a decision's commit to its integration into a signed checkpoint.
LOG_MAX_MERGE_DELAY_S = float(env_str("LOG_MAX_MERGE_DELAY_S", "1"))
# Leaves integrated per sequencer pass (one transaction).
LOG_BATCH_SIZE = env_int("LOG_BATCH_SIZE", 5000)
# A sequencer that stops renewing its lease for this long is replaced by a stand-by.
LOG_LEASE_S = float(env_str("LOG_LEASE_S", "3"))
# Run a sequencer (active or stand-by) inside each web process; off where it runs as its own
# process (deploy/: manage.py run_sequencer), and by default under tests (which integrate
# explicitly: an in-process thread would write outside the tests' transactions).
LOG_SEQUENCER_EMBEDDED = env_bool("LOG_SEQUENCER_EMBEDDED", not TESTING)
# Every checkpoint is also written here, one file per tree size, for witnesses; "" turns it off.
LOG_WITNESS_DIR = env_str("LOG_WITNESS_DIR", str(VAR_DIR / "log-checkpoints"))
# Checkpoints are posted (signed like alerts, ALERT_WEBHOOK_SECRET) to this URL; by default the
# alert webhook's, at most every LOG_WITNESS_WEBHOOK_INTERVAL_S seconds.
LOG_WITNESS_WEBHOOK_URL = env_str("LOG_WITNESS_WEBHOOK_URL", env_str("ALERT_WEBHOOK_URL", ""))
LOG_WITNESS_WEBHOOK_INTERVAL_S = float(env_str("LOG_WITNESS_WEBHOOK_INTERVAL_S", "60"))

# --- Compliance ----------------------------------------------------------------------------------
# Alert this many days before an erasure request's 30-day deadline.
ERASURE_WARN_DAYS = env_int("ERASURE_WARN_DAYS", 7)
# Integrated Gradients steps for explanations of non-linear models (error ~2e-4 at 500).
EXPLANATION_IG_STEPS = env_int("EXPLANATION_IG_STEPS", 200)
# Groups smaller than this are suppressed in bias reports (the policy file may set its own).
BIAS_MIN_GROUP_SIZE = env_int("BIAS_MIN_GROUP_SIZE", 20)

# --- Monitoring ----------------------------------------------------------------------------------
# Seconds between flushes of each serving process's counters into per-minute rows.
METRICS_FLUSH_S = float(env_str("METRICS_FLUSH_S", "1"))
# Bearer token for GET /metrics (Prometheus); admins may also read it in a 2FA session.
METRICS_TOKEN = env_secret("METRICS_TOKEN", "")
# Where alerts go besides the dashboard: e-mail addresses (Django's mail backend) and a webhook
# whose JSON body is signed with HMAC-SHA256 (header X-Gatehouse-Signature: sha256=<hex>).
ALERT_EMAILS = env_list("ALERT_EMAILS", [])
ALERT_WEBHOOK_URL = env_str("ALERT_WEBHOOK_URL", "")
ALERT_WEBHOOK_SECRET = env_secret("ALERT_WEBHOOK_SECRET", "")
# Repeated authentication failures from one key prefix or address within the window: an alert.
AUTH_FAILURE_ALERT_COUNT = env_int("AUTH_FAILURE_ALERT_COUNT", 20)
AUTH_FAILURE_WINDOW_S = env_int("AUTH_FAILURE_WINDOW_S", 300)
# How long a reply is kept for retries with the same Idempotency-Key.
IDEMPOTENCY_TTL_HOURS = env_int("IDEMPOTENCY_TTL_HOURS", 24)

# --- Authentication and sessions ---------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 8},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_NAME = "gatehouse_session"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_ABSOLUTE_TIMEOUT_S", 12 * 3600)
SESSION_IDLE_TIMEOUT_S = env_int("SESSION_IDLE_TIMEOUT_S", 30 * 60)

# django-axes: 10 failures for one username within 15 minutes lock that username only.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = ["username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "gatehouse/locked_out.html"
AXES_SENSITIVE_PARAMETERS = ["password", "otp_token", "token"]
AXES_VERBOSE = False
# Lockout is per username on purpose (ASVS 6.3.1): colleagues behind one NAT address keep
# signing in while an attacked account is locked. Per-address limits are the rate limiter's job.
SILENCED_SYSTEM_CHECKS = ["axes.W006"]

# django-guardian: no anonymous user object; we never grant anything to anonymous.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

OTP_TOTP_ISSUER = env_str("OTP_TOTP_ISSUER", "Gatehouse")
OTP_STATIC_THROTTLE_FACTOR = 1
OTP_TOTP_THROTTLE_FACTOR = 1

API_KEY_DEFAULT_EXPIRY_DAYS = env_int("API_KEY_DEFAULT_EXPIRY_DAYS", 90)
API_KEY_MAX_EXPIRY_DAYS = env_int("API_KEY_MAX_EXPIRY_DAYS", 365)

# Rate limits (gatehouse/ratelimit.py): "<requests>/<seconds>" per API key, or per user in a
# browser session; 0 or empty turns one off. RATE_LIMIT_API counts every authenticated API
# request, RATE_LIMIT_PREDICT also online predictions and batch submissions. The counters are
# atomic in the database (embedded default) or Redis ("redis", the default with REDIS_URL).
_RATE_FORMAT = re.compile(r"\s*(?:0|\d+\s*/\s*[1-9]\d*)?\s*")
RATE_LIMIT_API = env_str("RATE_LIMIT_API", "1200/60")
RATE_LIMIT_PREDICT = env_str("RATE_LIMIT_PREDICT", "600/60")
RATE_LIMIT_STORAGE = env_str("RATE_LIMIT_STORAGE", "redis" if REDIS_URL else "database")
if RATE_LIMIT_STORAGE not in {"database", "redis"} or (
    RATE_LIMIT_STORAGE == "redis" and not REDIS_URL
):
    raise ImproperlyConfigured("RATE_LIMIT_STORAGE is 'database', or 'redis' with REDIS_URL set")
for _rate_name in ("RATE_LIMIT_API", "RATE_LIMIT_PREDICT"):
    if not _RATE_FORMAT.fullmatch(globals()[_rate_name]):
        raise ImproperlyConfigured(f"{_rate_name} is '<requests>/<seconds>' (e.g. 600/60) or 0")

# Raw saves (fixtures, serialized test rollbacks) are data loads, not human decisions.
AUDITLOG_DISABLE_ON_RAW_SAVE = True

# --- Security headers (always on; the HTTPS-only parts in production) --------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "form-action": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
    }
}
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^health$"]

# --- Static files ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Outside production, serve straight from the source folders: no collectstatic step needed.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = False
MEDIA_ROOT = VAR_DIR / "media"

# --- Limits ------------------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2 * 1024 * 1024)

if TESTING:
    # Fast hashing in tests only; production keeps Django's PBKDF2 default.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- Internationalisation ----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- API ---------------------------------------------------------------------------------------
# Interactive API docs are for staff only in production (ASVS 13.4, API9).
API_DOCS_PUBLIC = env_bool("API_DOCS_PUBLIC", not PRODUCTION)

# --- Model registry ------------------------------------------------------------------------------
ARTIFACT_STORE_DIR = Path(env_str("ARTIFACT_STORE_DIR", str(VAR_DIR / "artifacts")))
# Promotion gates per risk class (TOML); default: apps/registry/policies/promotion.toml.
REGISTRY_POLICY_FILE = env_str("REGISTRY_POLICY_FILE", "")
ARTIFACT_MAX_BYTES = env_int("ARTIFACT_MAX_BYTES", 200 * 1024 * 1024)
VALIDATION_MAX_BYTES = env_int("VALIDATION_MAX_BYTES", 20 * 1024 * 1024)
# Uploads stream to temporary files above this size instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- Inference ------------------------------------------------------------------------------------
# "local" (in-process torch, the default) or "torchserve".
INFERENCE_BACKEND = env_str("INFERENCE_BACKEND", "local")
# Micro-batching of concurrent requests in the local backend.
LOCAL_BATCH_MAX_ROWS = env_int("LOCAL_BATCH_MAX_ROWS", 64)
LOCAL_BATCH_MAX_WAIT_MS = env_int("LOCAL_BATCH_MAX_WAIT_MS", 2)
LOCAL_TORCH_THREADS = env_int("LOCAL_TORCH_THREADS", 1)
# Answer with the local backend when TorchServe is down (instead of 503).
TORCHSERVE_FALLBACK_LOCAL = env_bool("TORCHSERVE_FALLBACK_LOCAL", False)

# --- TorchServe (used by the TorchServe inference backend) --------------------------------------
TORCHSERVE_INFERENCE_URL = env_str("TORCHSERVE_INFERENCE_URL", "http://127.0.0.1:18080")
TORCHSERVE_MANAGEMENT_URL = env_str("TORCHSERVE_MANAGEMENT_URL", "http://127.0.0.1:18081")
TORCHSERVE_TOKEN = env_secret("TORCHSERVE_TOKEN") or ""
TORCHSERVE_MANAGEMENT_TOKEN = env_secret("TORCHSERVE_MANAGEMENT_TOKEN") or TORCHSERVE_TOKEN
TORCHSERVE_BREAKER_FAIL_MAX = env_int("TORCHSERVE_BREAKER_FAIL_MAX", 5)
TORCHSERVE_BREAKER_RESET_S = env_int("TORCHSERVE_BREAKER_RESET_S", 10)
TORCHSERVE_TIMEOUT_S = env_int("TORCHSERVE_TIMEOUT_S", 5)
TORCHSERVE_MODEL_STORE = Path(env_str("TORCHSERVE_MODEL_STORE", str(VAR_DIR / "model_store")))
TORCHSERVE_WORKERS = env_int("TORCHSERVE_WORKERS", 1)
TORCHSERVE_BATCH_SIZE = env_int("TORCHSERVE_BATCH_SIZE", 8)
TORCHSERVE_MAX_BATCH_DELAY_MS = env_int("TORCHSERVE_MAX_BATCH_DELAY_MS", 5)
# TorchServe writes its own keys (key_file.json); Gatehouse re-reads them after a rotation.
TORCHSERVE_KEY_FILE = env_str("TORCHSERVE_KEY_FILE", "")

# --- Logging -----------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_JSON = env_bool("LOG_JSON", PRODUCTION)
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "gatehouse.logging.RequestIDFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_JSON else "plain",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "axes": {"level": "WARNING"},
        "gatehouse.security": {"level": "INFO"},
        # httpx logs every request at INFO: one line per prediction through TorchServe.
        "httpx": {"level": "WARNING"},
    },
}

# --- Sentry ------------------------------------------------------------------------------------
SENTRY_DSN = env_secret("SENTRY_DSN") or ""
if SENTRY_DSN:
    from gatehouse.sentry import init_sentry

    init_sentry(dsn=SENTRY_DSN, environment=GATEHOUSE_ENV)
