"""Chorus settings: one file, driven by environment variables (see .env.example).

With no environment at all Chorus runs embedded: SQLite, files and a broker folder under
``var/``, an in-memory channel layer, e-mails written to ``var/mail/``, DEBUG off (friendly
error pages, no URL conf shown to strangers). ``DATABASE_URL`` and ``REDIS_URL`` switch to
PostgreSQL and Redis; nothing else has to change.
"""

import math
import os
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    """A string from the environment; ``NAME_FILE`` (a path) wins so secrets stay out of env."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from exc
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    """A strict boolean: unknown spellings are an error, not silently false."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    """A strict integer, optionally bounded below."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A strict, finite number of at least ``minimum``."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from exc
    if not math.isfinite(value) or value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be a finite number of at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


# WAL lets the web process read while the worker writes progress; IMMEDIATE takes the write
# lock when a transaction starts, so concurrent writers queue instead of failing.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL;",
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
}


def database_from_url(url: str) -> dict:
    """``postgres://user:pass@host:port/name?sslmode=…`` or ``sqlite:////abs/path``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        name = unquote(parts.path)
        if name.startswith("//"):  # sqlite:////abs/path keeps one leading slash
            name = name[1:]
        elif name.startswith("/"):
            name = name[1:] or ":memory:"
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name or ":memory:",
            "OPTIONS": dict(SQLITE_OPTIONS),
        }
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        options = dict(parse_qsl(parts.query))
        # A psycopg connection pool per process: under ASGI every request runs in a thread of
        # its own, so without a pool each one opens (and closes) a database connection.
        pool_size = env_int("DATABASE_POOL_SIZE", 20, minimum=0)
        if pool_size:
            options["pool"] = {"min_size": 1, "max_size": pool_size, "timeout": 10}
        return {
            # Django's PostgreSQL backend, with a pool that pings only connections that sat
            # idle (studio_site/postgresql/base.py) rather than on every checkout.
            "ENGINE": "studio_site.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "chorus",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            # Persistent connections do not suit ASGI (Django's docs) and cannot be combined
            # with the pool: 0 unless asked for (with DATABASE_POOL_SIZE=0).
            "CONN_MAX_AGE": 0 if pool_size else env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
            "CONN_HEALTH_CHECKS": True,
        }
    raise ImproperlyConfigured(f"DATABASE_URL scheme {parts.scheme!r} is not supported.")


# --- Core -------------------------------------------------------------------------------

VAR_DIR = (BASE_DIR / (env_str("CHORUS_VAR_DIR") or "var")).resolve()  # relative to the repo
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
# Embedded: the one-machine default (no DATABASE_URL). It may generate its own SECRET_KEY and
# answers on loopback names without configuration; a deployment sets both.
EMBEDDED = not env_str("DATABASE_URL")


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not (DEBUG or EMBEDDED):
        raise ImproperlyConfigured(
            "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off (with DATABASE_URL). "
            'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(50))"'
        )
    # Embedded default: generated once and kept under var/ so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        # Created 0600 from the start: never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
_LOCAL = DEBUG or EMBEDDED
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if _LOCAL else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "")  # used in e-mails when no request is at hand

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "template_partials",
    "apps.workspaces",
    "apps.generation",
    "apps.jobs",
    "apps.billing",
    "apps.gateway",
    "apps.history",
    "apps.voices",
    "apps.speech",
    "apps.transcripts",
    "apps.projects",
    "apps.agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # After CSRF (which has parsed a POST's form): NUL characters anywhere are a 400.
    "apps.workspaces.bad_input.BadInputMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.workspaces.middleware.WorkspaceMiddleware",
    # The member's time zone (the tz cookie static/js/chorus.js sets) for every date shown.
    "studio_site.timezones.TimezoneMiddleware",
]

ROOT_URLCONF = "studio_site.urls"
ASGI_APPLICATION = "studio_site.asgi.application"
WSGI_APPLICATION = "studio_site.wsgi.application"

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
                "apps.workspaces.context_processors.workspace",
                "apps.billing.context_processors.notifications",
                "apps.projects.context_processors.approvals",
                "studio_site.navigation.navigation",
            ],
            # {{ x|label }}, {{ x|when }}, {{ x|duration }}, {{ n|count:"unit" }}, {{ x|language }}
            "builtins": ["studio_site.format"],
        },
    }
]

# --- Data -------------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL")
DATABASES = {
    "default": database_from_url(DATABASE_URL)
    if DATABASE_URL
    else {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "chorus.sqlite3",
        "OPTIONS": dict(SQLITE_OPTIONS),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "workspaces.User"

REDIS_URL = env_str("REDIS_URL")

# A consumer waits for channel messages with a 5 s blocking pop (channels_redis); redis-py 8
# reads with a 5 s socket timeout by default, so an idle socket (a live session between two
# lines, a job without progress) raced it and died with a TimeoutError. Read longer.
CHANNEL_REDIS_OPTIONS = {"socket_timeout": 30, "socket_connect_timeout": 5}

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("CHORUS_CACHE_PREFIX", "chorus"),
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, **CHANNEL_REDIS_OPTIONS}],
                "prefix": env_str("CHORUS_CHANNEL_PREFIX", "chorus"),
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Files ------------------------------------------------------------------------------

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing folder
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT") or VAR_DIR / "media")
WHITENOISE_USE_FINDERS = True  # serve static/ straight from the repo without collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
FILE_UPLOAD_PERMISSIONS = 0o640

# --- Uploads: on disk, never whole in memory (issue 12) ---------------------------------
# An uploaded file is kept in memory only up to FILE_UPLOAD_MAX_MEMORY_SIZE; a larger one is
# written to FILE_UPLOAD_TEMP_DIR as it arrives, and the upload check and the engines read it
# from there a window at a time. Keeping it moves that file into MEDIA_ROOT (a rename when both
# are on one file system, as by default under CHORUS_VAR_DIR), never another copy.
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(VAR_DIR / "uploads")  # not /tmp, which may be a RAM disk
Path(FILE_UPLOAD_TEMP_DIR).mkdir(exist_ok=True)
# The text fields of a form (files do not count) held in memory at most (Django's default),
# and how many there may be: /v1/speech-to-text takes 1000 key terms as repeated fields.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1100

# --- Auth -------------------------------------------------------------------------------

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "workspaces:home"
LOGOUT_REDIRECT_URL = "login"
AUTHENTICATION_BACKENDS = ["apps.workspaces.backends.ThrottledBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 8},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
PASSWORD_RESET_TIMEOUT = env_int("CHORUS_PASSWORD_RESET_SECONDS", 3 * 86400, minimum=60)

# Sign-in throttling: failures per window, counted per account and per client address.
CHORUS_LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int(
    "CHORUS_LOGIN_MAX_FAILURES_PER_ACCOUNT", 5, minimum=1
)
CHORUS_LOGIN_MAX_FAILURES_PER_IP = env_int("CHORUS_LOGIN_MAX_FAILURES_PER_IP", 20, minimum=1)
CHORUS_LOGIN_WINDOW_SECONDS = env_int("CHORUS_LOGIN_WINDOW_SECONDS", 900, minimum=1)

# Fernet key for secrets stored in the database (upstream API keys). Derived from SECRET_KEY
# when unset (see .env.example for how to generate one).
CHORUS_ENCRYPTION_KEY = env_str("CHORUS_ENCRYPTION_KEY")
# Where a new ElevenLabs connection points by default.
CHORUS_ELEVENLABS_BASE_URL = env_str("CHORUS_ELEVENLABS_BASE_URL", "https://api.elevenlabs.io")

# --- Engine egress (which upstream hosts the server may reach) ---------------------------
# A workspace owner chooses the ElevenLabs base URL, and the server connects to it: these
# settings keep that from reaching this machine or the private network (SSRF). Every request
# resolves the host and checks each address it resolves to, whatever was checked at save time.
#
# Host names a base URL may name (comma-separated, exact match). The default is the official
# API and its regional hosts; the host of CHORUS_ELEVENLABS_BASE_URL is always allowed too.
CHORUS_ENGINE_ALLOWED_HOSTS = [
    host.lower().rstrip(".")
    for host in env_list(
        "CHORUS_ENGINE_ALLOWED_HOSTS",
        [
            "api.elevenlabs.io",
            "api.us.elevenlabs.io",
            "api.eu.residency.elevenlabs.io",
            "api.in.residency.elevenlabs.io",
            "api.sg.residency.elevenlabs.io",
        ],
    )
]
for _host in CHORUS_ENGINE_ALLOWED_HOSTS:
    if not re.fullmatch(r"[a-z0-9.-]+|\[?[0-9a-f:.]+\]?", _host) or _host.count(":") == 1:
        raise ImproperlyConfigured(
            f"CHORUS_ENGINE_ALLOWED_HOSTS names hosts, not URLs or host:port ({_host!r})."
        )
# This machine (localhost, 127.0.0.0/8, ::1) may be a base URL, over plain http too: for
# tests and for a Chorus chained to another Chorus or a fake upstream on the same machine.
CHORUS_ENGINE_ALLOW_LOOPBACK = env_bool("CHORUS_ENGINE_ALLOW_LOOPBACK", False)
# An allowed host may resolve to a private-network address (10/8, 172.16/12, 192.168/16,
# 100.64/10, fc00::/7): for a gateway on the local network. Link-local (cloud metadata),
# multicast and reserved addresses are never reached.
CHORUS_ENGINE_ALLOW_PRIVATE = env_bool("CHORUS_ENGINE_ALLOW_PRIVATE", False)

# Who may create a workspace: "staff" (site administrators; everyone else joins by
# invitation) or "anyone" signed in.
CHORUS_WORKSPACE_CREATION = env_str("CHORUS_WORKSPACE_CREATION", "staff").strip().lower()
if CHORUS_WORKSPACE_CREATION not in {"staff", "anyone"}:
    raise ImproperlyConfigured(
        f"CHORUS_WORKSPACE_CREATION={CHORUS_WORKSPACE_CREATION!r}: use staff or anyone."
    )

CHORUS_INVITATION_DAYS = env_int("CHORUS_INVITATION_DAYS", 7, minimum=1)
CHORUS_ADMIN_EMAIL = env_str("CHORUS_ADMIN_EMAIL", "admin@chorus.local")
CHORUS_ADMIN_PASSWORD = env_str("CHORUS_ADMIN_PASSWORD", "")

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not _LOCAL)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not _LOCAL)
# Behind a reverse proxy that sets X-Forwarded-For / -Proto (and strips clients' own).
CHORUS_BEHIND_PROXY = env_bool("CHORUS_BEHIND_TLS_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if CHORUS_BEHIND_PROXY else None
X_FRAME_OPTIONS = "DENY"

# --- E-mail -----------------------------------------------------------------------------

EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
else:
    # No mail server: each e-mail is written to a file in var/mail/ (invitation links carry
    # their tokens, so they never go to the log).
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = VAR_DIR / "mail"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Chorus <chorus@localhost>")

# --- Celery -----------------------------------------------------------------------------

BROKER_DIR = Path(env_str("CHORUS_BROKER_DIR") or VAR_DIR / "broker")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
else:
    # A broker with no server process: kombu's filesystem transport, shared by every process
    # on this machine through a folder.
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        # Workers look for new messages this often (seconds); the default 1 s adds a second
        # to every job's start.
        "polling_interval": 0.1,
        "store_processed": False,
    }
CELERY_TASK_DEFAULT_QUEUE = env_str("CHORUS_QUEUE", "chorus")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True  # job state lives in the database, not a result backend
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CHORUS_TASK_SOFT_TIME_LIMIT", 3600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CHORUS_TASK_TIME_LIMIT", 3900, minimum=1)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "jobs-sweep-stale": {
        "task": "jobs.sweep_stale",
        "schedule": float(env_int("CHORUS_JOB_SWEEP_SECONDS", 30, minimum=1)),
    },
    "billing-plans-sync": {
        "task": "generation.plans_sync",
        "schedule": float(env_int("CHORUS_PLAN_SYNC_SECONDS", 600, minimum=10)),
    },
    "billing-reservations-sweep": {
        "task": "billing.reservations_sweep",
        "schedule": 60.0,
    },
    "transcripts-live-sweep": {
        "task": "transcripts.live_sweep",
        "schedule": 30.0,
    },
    "agents-conversations-sweep": {"task": "agents.conversations_sweep", "schedule": 600.0},
    # The spend review (issue 16): the forecast against the plan (managers told once per
    # period), the anomaly rules, and the night's reconciliation with the provider.
    "billing-forecasts": {"task": "billing.forecasts_check", "schedule": 3600.0},
    "billing-anomalies": {"task": "billing.anomalies_check", "schedule": 900.0},
    "billing-reconcile-nightly": {
        "task": "billing.reconcile_nightly",
        "schedule": crontab(hour=2, minute=15),
    },
}
# A usage reservation not settled within this many seconds is released by the sweeper.
CHORUS_RESERVATION_TTL_SECONDS = env_int("CHORUS_RESERVATION_TTL_SECONDS", 1800, minimum=60)
# Live captions: a session with no socket and no audio for this long (its reconnect window)
# was left, the page closed for good: it is saved and charged the seconds received, as Stop
# would, and a page that comes back later is told it ended.
CHORUS_LIVE_ABANDON_SECONDS = env_float("CHORUS_LIVE_ABANDON_SECONDS", 300.0, minimum=1.0)
if CHORUS_LIVE_ABANDON_SECONDS >= CHORUS_RESERVATION_TTL_SECONDS:
    raise ImproperlyConfigured(
        "CHORUS_LIVE_ABANDON_SECONDS must be shorter than CHORUS_RESERVATION_TTL_SECONDS, or "
        "the reservation of a live session waiting for its page would be swept first."
    )

# Jobs: a running job whose worker has not written a heartbeat for this long is failed.
CHORUS_JOB_HEARTBEAT_SECONDS = env_float("CHORUS_JOB_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
CHORUS_JOB_STALE_SECONDS = env_float("CHORUS_JOB_STALE_SECONDS", 60.0, minimum=1.0)
if CHORUS_JOB_STALE_SECONDS < 2 * CHORUS_JOB_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "CHORUS_JOB_STALE_SECONDS must be at least twice CHORUS_JOB_HEARTBEAT_SECONDS, "
        "or healthy jobs would be failed by the sweeper."
    )
CHORUS_JOB_MAX_RETRIES = env_int("CHORUS_JOB_MAX_RETRIES", 4, minimum=0)
CHORUS_JOB_RETRY_BASE_SECONDS = env_float("CHORUS_JOB_RETRY_BASE_SECONDS", 2.0, minimum=0.01)
# Kinds the stale-job sweeper starts again by itself (a new attempt, up to
# CHORUS_JOB_MAX_RETRIES times) after their worker died: jobs started through /v1, whose
# callers only poll and cannot press Retry. Their runners resume (one ledger row per job).
CHORUS_JOB_RESUME_KINDS = {"music", "dubbing"}
# What each job kind runs: kind -> dotted path of a function(job, progress).
CHORUS_JOB_KINDS = {
    "workspace_export": "apps.workspaces.services.workspace_export_run",
    "music": "apps.projects.services.music_run",
    "dubbing": "apps.projects.services.dubbing_run",
    "voices_sync": "apps.voices.services.library_sync_run",
    "transcribe": "apps.transcripts.services.transcribe_run",
    "project_render": "apps.projects.narration.render_run",
    "project_export": "apps.projects.exports.export_run",
    "project_cue": "apps.projects.cues.cue_run",
}
# What apps add to a workspace export: callables (workspace) -> [(path in the ZIP, data)],
# data being JSON-able or bytes (a file).
CHORUS_EXPORT_SECTIONS = [
    "apps.voices.services_usage.export_sections",
    "apps.billing.export.export_sections",  # the ledger, billing/ledger.csv
]
# /v1/music waits this long for its job, then answers 504 naming the job (it keeps running).
# Below the official SDK's 240 s client timeout, so the caller hears why it waited.
CHORUS_API_JOB_WAIT_SECONDS = env_float("CHORUS_API_JOB_WAIT_SECONDS", 180.0, minimum=0.1)
# Most billable /v1 calls (generations) one member may have in flight at once; one more is
# refused with 429 too_many_concurrent_requests (ElevenLabs' concurrency limit). 0: no cap.
CHORUS_API_MAX_CONCURRENT = env_int("CHORUS_API_MAX_CONCURRENT", 10, minimum=0)
# How long a process remembers a checked /v1 key (0: look it up on every call); changes made
# in another process (a revocation, a removed member) take effect within this time.
CHORUS_API_KEY_CACHE_SECONDS = env_int("CHORUS_API_KEY_CACHE_SECONDS", 5, minimum=0)

# --- Voices -------------------------------------------------------------------------------

# Cloning in the studio: the largest sample, and all samples of one clone together (MB).
CHORUS_CLONE_SAMPLE_MAX_MB = env_int("CHORUS_CLONE_SAMPLE_MAX_MB", 20, minimum=1)
CHORUS_CLONE_TOTAL_MAX_MB = env_int("CHORUS_CLONE_TOTAL_MAX_MB", 100, minimum=1)
# The largest recording (audio or video) the Transcripts page takes, in MB.
CHORUS_TRANSCRIBE_MAX_MB = env_int("CHORUS_TRANSCRIBE_MAX_MB", 500, minimum=1)
# The voice library syncs itself when a workspace is set up and when its engine changes; a
# manager is told it is stale when its last sync is older than this many days.
CHORUS_VOICES_AUTO_SYNC = env_bool("CHORUS_VOICES_AUTO_SYNC", True)
CHORUS_VOICES_STALE_DAYS = env_int("CHORUS_VOICES_STALE_DAYS", 7, minimum=1)
# The Speech page speaks a long text in parts of at most this many characters, one engine
# call each (100 to 10,000, the engines' limit of one request).
CHORUS_SPEECH_PART_MAX = min(env_int("CHORUS_SPEECH_PART_MAX", 10_000, minimum=100), 10_000)
# A project render speaks this many blocks at once (0: one per core, at most 4; always one on
# SQLite).
CHORUS_PROJECT_RENDER_THREADS = env_int("CHORUS_PROJECT_RENDER_THREADS", 0, minimum=0)

# --- Voice agents (apps.agents) ------------------------------------------------------------

# On the local engine an agent thinks with an OpenAI-compatible chat endpoint (llama.cpp
# server, Ollama, vLLM, a hosted one) when its URL is set: the base URL before
# /chat/completions, e.g. http://127.0.0.1:11434/v1. Without one, the offline model.
CHORUS_AGENT_LLM_URL = env_str("CHORUS_AGENT_LLM_URL")
CHORUS_AGENT_LLM_KEY = env_str("CHORUS_AGENT_LLM_KEY")  # its bearer token, if it needs one
# The model names that endpoint serves (offered in the agent form), comma-separated.
CHORUS_AGENT_LLM_MODELS = env_list("CHORUS_AGENT_LLM_MODELS", [])
CHORUS_AGENT_LLM_TIMEOUT_SECONDS = env_float("CHORUS_AGENT_LLM_TIMEOUT_SECONDS", 30.0, minimum=1.0)

# --- Request bodies (studio_site.server) ---------------------------------------------------

# Every body streams to the app unparsed (spooled to disk beyond 100 kB). A body longer than
# its route's limit is answered 413 before any of it is read; so is a chunked body as soon as
# it passes the limit. Routes not listed take CHORUS_BODY_MAX_MB. Limits are in MB, with 1 MB
# over the file limits for the form's other fields and multipart framing.
CHORUS_BODY_MAX_MB = env_int("CHORUS_BODY_MAX_MB", 3, minimum=1)
CHORUS_BODY_LIMITS_MB = [
    (r"^/v1/speech-to-text/?$", CHORUS_TRANSCRIBE_MAX_MB + 1),
    (r"^/v1/dubbing/?$", CHORUS_TRANSCRIBE_MAX_MB + 1),
    (r"^/transcripts/new/$", CHORUS_TRANSCRIBE_MAX_MB + 1),
    (r"^/v1/voices/add/?$", CHORUS_CLONE_TOTAL_MAX_MB + 1),
    (r"^/v1/voices/[^/]+/edit/?$", CHORUS_CLONE_TOTAL_MAX_MB + 1),
    (r"^/voices/clone/$", CHORUS_CLONE_TOTAL_MAX_MB + CHORUS_CLONE_SAMPLE_MAX_MB + 1),
]
# How long the body of an answered (refused) request is read and dropped, so that the client,
# still sending, reads the answer before the connection closes.
CHORUS_BODY_LINGER_SECONDS = env_float("CHORUS_BODY_LINGER_SECONDS", 2.0, minimum=0.0)

# --- Misc -------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "daphne": {"level": "WARNING"},
        "celery": {"level": "INFO"},
    },
}
