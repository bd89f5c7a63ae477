"""Settings, all from the environment (12-factor) with safe local defaults.

Local default: DEBUG on, SQLite under .local/, Kafka on 127.0.0.1:9092.
Production: DJANGO_DEBUG=0 and DJANGO_SECRET_KEY set; `manage.py check --deploy` is clean.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# Where the embedded default keeps its state (SQLite file, Kafka data, sent emails...).
LOCAL_STATE_DIR = Path(os.environ.get("FOODSITE_HOME", BASE_DIR / ".local"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "django-insecure-local-development-only-never-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # The layers below the apps (docs/architecture.md, "Layers"): the event machinery (its
    # label is "foodsite", which keeps its tables), live pages' transport, metrics.
    "eventing",
    "live",
    "observability",
    "orders",
    "deliveries",
    "stats",
    "notifications",
    "recommendations",
    "deadletters",
    "axes",  # login throttling (foodsite/auth.py)
]

MIDDLEWARE = [
    # First: every log line of the request carries its trace id; the histogram times it all.
    "eventing.tracing.TraceMiddleware",
    "observability.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "foodsite.static_files.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused for too many failures into the login page saying so.
    "axes.middleware.AxesMiddleware",
    # Closest to the view: a view whose database does not answer gets a 503 with a reason.
    "foodsite.unavailable.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "foodsite.urls"
ASGI_APPLICATION = "foodsite.asgi.application"

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
            ],
        },
    },
]

# SQLite by default; DATABASE_URL (e.g. postgres://...) in production.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{LOCAL_STATE_DIR / 'db.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
ON_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
if ON_SQLITE:
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web and every consumer write the same file at once: WAL lets readers run beside a
    # writer, IMMEDIATE takes the write lock up front (no upgrade deadlocks), and the
    # timeout makes a busy database wait instead of failing. Django's backend, but for how
    # BEGIN waits for the lock (foodsite/sqlite/base.py).
    DATABASES["default"]["ENGINE"] = "foodsite.sqlite"
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's, with a health check of kept connections that costs no round trip
    # (foodsite/postgresql/base.py).
    DATABASES["default"]["ENGINE"] = "foodsite.postgresql"

# Threads per web process for Django's sync code (foodsite.asgi.OneThreadASGIHandler), each
# keeping its database connection: one on SQLite (one writer at a time anyway), a few on
# PostgreSQL so that one request's round trips and commit flush overlap another's.
WEB_SYNC_THREADS = int(os.environ.get("WEB_SYNC_THREADS", "1" if ON_SQLITE else "4"))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "menu"

# Login throttling (django-axes; foodsite/auth.py): LOGIN_FAILURE_LIMIT failed logins for one
# username from one address lock that username at that address for LOGIN_LOCKOUT_MINUTES,
# counted from the last failure; the right password is refused meanwhile. Another address is
# not locked (someone guessing elsewhere cannot lock a courier out), a successful login
# clears the count, and staff can unlock (README, "Settings").
AUTHENTICATION_BACKENDS = ["foodsite.auth.LoginThrottle", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("LOGIN_FAILURE_LIMIT", "5"))
LOGIN_LOCKOUT_MINUTES = float(os.environ.get("LOGIN_LOCKOUT_MINUTES", "15"))
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "foodsite.auth.client_address"
AXES_USERNAME_CALLABLE = "foodsite.auth.attempted_username"
AXES_LOCKOUT_CALLABLE = "foodsite.views.login_locked_out"
# How many reverse proxies stand in front of the web processes, each adding the address it got
# the request from to X-Forwarded-For (nginx: $proxy_add_x_forwarded_for). 0: clients connect
# directly, and their address is the connection's. Behind a proxy left at 0, every login would
# come from the proxy's address, and a stranger's guesses would lock the real user out.
TRUSTED_PROXIES = int(os.environ.get("DJANGO_TRUSTED_PROXIES", "0"))
if AXES_FAILURE_LIMIT < 1 or LOGIN_LOCKOUT_MINUTES <= 0 or TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured(
        "LOGIN_FAILURE_LIMIT must be at least 1, LOGIN_LOCKOUT_MINUTES above 0, DJANGO_TRUSTED_PROXIES 0 or more."
    )

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The site's own files (stylesheet, icon); each app and package has its own static/ too.
STATICFILES_DIRS = [BASE_DIR / "static"]
# Only production serves collected files; locally WhiteNoise finds them in the apps.
STATIC_ROOT = None if DEBUG else Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Under the local launcher nobody runs collectstatic: serve straight from the apps.
WHITENOISE_USE_FINDERS = DEBUG

# Security: secure cookies and HTTPS everywhere unless DEBUG. Behind a TLS-terminating
# proxy set DJANGO_SECURE_PROXY_SSL_HEADER=1.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Kafka -------------------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
# Prepended to every topic and consumer-group name: lets tests (and several deployments
# sharing a cluster) use their own topics on one broker.
KAFKA_TOPIC_PREFIX = os.environ.get("KAFKA_TOPIC_PREFIX", "")
KAFKA_GROUP_PREFIX = os.environ.get("KAFKA_GROUP_PREFIX", "")
# orders and payments share this count so they stay co-partitioned.
KAFKA_PARTITIONS = int(os.environ.get("KAFKA_PARTITIONS", "3"))
# How fast a consumer that died without saying goodbye (kill -9) loses its partitions.
KAFKA_CONSUMER_SESSION_TIMEOUT_MS = int(os.environ.get("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "10000"))
# Events a consumer fetches ahead of its batches (librdkafka's queued.max.messages.kbytes).
# Its default, 64 MB, was a third of a projection's RSS; 8 MB is still tens of thousands of
# events, seconds of work ahead of a batch of 1000.
KAFKA_CONSUMER_PREFETCH_KB = int(os.environ.get("KAFKA_CONSUMER_PREFETCH_KB", "8192"))
KAFKA_REPLICATION_FACTOR = int(os.environ.get("KAFKA_REPLICATION_FACTOR", "1"))
KAFKA_RETENTION_MS = int(os.environ.get("KAFKA_RETENTION_MS", str(7 * 24 * 3600 * 1000)))
KAFKA_RETENTION_BYTES = int(os.environ.get("KAFKA_RETENTION_BYTES", str(1024**3)))
# The seed's reliability knobs: acks=all for money (the "banking" case); acks=0 or 1 trade
# durability for throughput (the "IoT sensors" case).
KAFKA_PRODUCER = {
    "acks": os.environ.get("KAFKA_ACKS", "all"),
    "enable.idempotence": env_bool("KAFKA_IDEMPOTENCE", True),
    "retries": int(os.environ.get("KAFKA_RETRIES", "2147483647")),
    # Short on purpose: an event Kafka has not acknowledged by then is the outbox relay's
    # job, and the relay must not send what a producer still holds (a duplicate).
    "delivery.timeout.ms": int(os.environ.get("KAFKA_DELIVERY_TIMEOUT_MS", "10000")),
    # No linger: a customer's page waits for each event, and librdkafka still batches what
    # queues while a request is in flight (bench/README.md, live latency: p50 -8 ms, no loss
    # of orders/s measured). Raise it for bulk producers.
    "linger.ms": int(os.environ.get("KAFKA_LINGER_MS", "0")),
    "compression.type": os.environ.get("KAFKA_COMPRESSION", "lz4"),
}

# Dead-letter limit (eventing.dead_letters.DeadLetterLimit): a consumer stops, instead of
# dead-lettering on, when more than this share of a window of this many events failed: that
# is a broken deploy or producer, not a bad event. DLQ_MAX_SHARE=1 turns it off.
DLQ_MAX_SHARE = float(os.environ.get("DLQ_MAX_SHARE", "0.5"))
DLQ_WINDOW = int(os.environ.get("DLQ_WINDOW", "100"))
if not (0 < DLQ_MAX_SHARE <= 1 and DLQ_WINDOW >= 1):
    raise ImproperlyConfigured("DLQ_MAX_SHARE must be in (0, 1] and DLQ_WINDOW at least 1.")

# A web request slower than this (inside Django, middleware included) is logged as a WARNING
# with its view, status and trace id; the histogram on /metrics has them all.
SLOW_REQUEST_MS = int(os.environ.get("SLOW_REQUEST_MS", "500"))
# SERVER_TIMING=1: every answer says how long it took inside the view (`app`) and inside the
# web process's handler around it (`handler`), as a Server-Timing header. For diagnosis (the
# failover tests turn it on: where a slow request's time went); off by default, since it
# tells any client how long each request took.
SERVER_TIMING = env_bool("SERVER_TIMING", False)

# How this deployment's producers encode events: "json" or "avro" (schemas in
# contract/schemas/). Consumers read both whatever this says: the content-type header tells.
EVENT_FORMAT = os.environ.get("EVENT_FORMAT", "json").strip().lower()
if EVENT_FORMAT not in {"json", "avro"}:
    raise ImproperlyConfigured(f"EVENT_FORMAT must be json or avro, not {EVENT_FORMAT!r}.")
# A Confluent-compatible schema registry (Apicurio's /apis/ccompat/v7 in the cluster profile):
# with EVENT_FORMAT=avro, events carry its schema ids (eventing.schema_registry); unset, none.
SCHEMA_REGISTRY_URL = os.environ.get("SCHEMA_REGISTRY_URL", "").strip().rstrip("/")

# Live pages (live.notices): consumers announce changes on the live-updates topic; each web
# process forwards them to its own websockets through the in-memory layer.
LIVE_UPDATES_RETENTION_MS = int(os.environ.get("LIVE_UPDATES_RETENTION_MS", str(3600 * 1000)))
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# A live socket re-reads its user's session and permission before it sends anything, at most
# this often (live.sockets): a logged-out courier stops getting rows within this many seconds.
LIVE_RECHECK_SECONDS = float(os.environ.get("LIVE_RECHECK_SECONDS", "10"))
# While a staff page is open on a web process, it reads the cluster's metadata this often and
# pushes a change of health (a broker gone or back, partitions under-replicated or offline).
KAFKA_HEALTH_EVERY_S = float(os.environ.get("KAFKA_HEALTH_EVERY_S", "1"))

# The event machinery's hooks and notice topics (eventing.hooks, eventing.topics): after a
# consumer commits, the live pages hear of it; its counts go to Prometheus.
EVENTING_NOTICE_TOPICS = {"live-updates": LIVE_UPDATES_RETENTION_MS}
EVENTING_AFTER_COMMIT = "live.notices.announce_changes"
EVENTING_METRICS = "observability.metrics.PrometheusMetrics"

# The relay sends outbox events still unsent this long after their commit: past the
# producer's delivery timeout, so that the producer has given up on them first.
OUTBOX_RELAY_AFTER_S = float(os.environ.get("OUTBOX_RELAY_AFTER_S", KAFKA_PRODUCER["delivery.timeout.ms"] / 1000 + 5))
# A relay pass claims the rows it sends for this long (another pass leaves them alone, then
# takes over those of a pass that died); the relay's producer tries each event for half of it.
OUTBOX_RELAY_LEASE_S = float(os.environ.get("OUTBOX_RELAY_LEASE_S", "60"))

# Who sends the outbox's rows to Kafka (eventing.conf says more): "celery", the web's producer
# after each commit and beat's relay task for what it missed; or "debezium", Kafka Connect
# reading the outbox's inserts from PostgreSQL's WAL (eventing.debezium; the cluster profile
# starts the worker), the web only writing the row. PostgreSQL only.
OUTBOX_RELAY = os.environ.get("OUTBOX_RELAY", "celery").strip().lower()
if OUTBOX_RELAY not in {"celery", "debezium"}:
    raise ImproperlyConfigured(f"OUTBOX_RELAY must be celery or debezium, not {OUTBOX_RELAY!r}.")
if OUTBOX_RELAY == "debezium" and ON_SQLITE:
    raise ImproperlyConfigured("OUTBOX_RELAY=debezium needs PostgreSQL (DATABASE_URL): SQLite has no logical decoding.")
# Debezium relay: outbox rows are deleted this long after their insert; the connector's
# heartbeat moves its replication slot this often while no order comes in.
OUTBOX_KEEP_S = float(os.environ.get("OUTBOX_KEEP_S", "3600"))
OUTBOX_HEARTBEAT_MS = int(os.environ.get("OUTBOX_HEARTBEAT_MS", "10000"))
# Kafka Connect's REST API (the Debezium relay): the launcher sets it; the staff page and
# /metrics report the connector's state from it.
CONNECT_URL = os.environ.get("CONNECT_URL", "").strip().rstrip("/")

# --- Celery ----------------------------------------------------------------------------
# Embedded default: Celery's SQLAlchemy transport on a SQLite file, so no extra server. Not
# Kafka's transport: the outbox relay exists for when Kafka is down, and its trigger must
# not depend on Kafka. docker-compose sets a Redis URL.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", f"sqla+sqlite:///{LOCAL_STATE_DIR / 'celery-broker.sqlite3'}")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
OUTBOX_RELAY_EVERY_S = float(os.environ.get("OUTBOX_RELAY_EVERY_S", "5"))
# A notification still unsent this long after it was recorded (its task never ran: worker
# or Celery broker down, retries exhausted) is queued again by beat's sweep, this often.
NOTIFICATIONS_SEND_AFTER_S = float(os.environ.get("NOTIFICATIONS_SEND_AFTER_S", "60"))
NOTIFICATIONS_SWEEP_EVERY_S = float(os.environ.get("NOTIFICATIONS_SWEEP_EVERY_S", "30"))
# A sender's claim on a notification (notifications.services.claim_lease): past it, another
# sender may take the notification over (the first one's worker died mid-send). Above EMAIL_TIMEOUT.
NOTIFICATIONS_CLAIM_LEASE_S = float(os.environ.get("NOTIFICATIONS_CLAIM_LEASE_S", "300"))
# Events older than this when their email would go out are recorded, not emailed: news only.
NOTIFICATIONS_MAX_AGE_H = float(os.environ.get("NOTIFICATIONS_MAX_AGE_H", "24"))
CELERY_BEAT_SCHEDULE = {
    "relay-outbox": (
        {"task": "foodsite.tasks.relay_outbox", "schedule": OUTBOX_RELAY_EVERY_S}
        if OUTBOX_RELAY == "celery"
        else {"task": "eventing.tasks.purge_relayed_outbox", "schedule": 60.0}
    ),
    "send-unsent-notifications": {"task": "notifications.tasks.send_unsent", "schedule": NOTIFICATIONS_SWEEP_EVERY_S},
}

# --- Email (the notifications service) -------------------------------------------------
# Locally every email is a file under .local/emails/ (nothing leaves the machine); set
# EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and EMAIL_HOST... for real mail.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = LOCAL_STATE_DIR / "emails"
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Below the sending claim's lease (NOTIFICATIONS_CLAIM_LEASE_S, 5 minutes).
EMAIL_TIMEOUT = int(os.environ.get("EMAIL_TIMEOUT", "30"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Foodsite <orders@foodsite.localhost>")

# --- Recommendations -------------------------------------------------------------------
# "Popular now" on the menu: units ordered per dish in this many last minutes.
RECOMMENDATIONS_POPULAR_WINDOW_MIN = int(os.environ.get("RECOMMENDATIONS_POPULAR_WINDOW_MIN", "60"))

# --- Metrics (observability/metrics.py, GET /metrics) ---------------------------------------
# Every process writes its metrics to files here (prometheus-client's multiprocess mode); the
# web process's /metrics adds them up. The launcher empties it at start.
PROMETHEUS_MULTIPROC_DIR = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR", LOCAL_STATE_DIR / "metrics"))
# Who may read /metrics: a request with `Authorization: Bearer <METRICS_TOKEN>`, or one from
# these networks. Never public by default: loopback only locally, nobody in production
# until a token or networks are set.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128" if DEBUG else "")

# --- Logs ------------------------------------------------------------------------------
# Plain lines for people (ending with " trace=<id>" when they are about one request or
# event), or LOG_FORMAT=json: one JSON object per line for log shippers.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"trace": {"()": "eventing.tracing.TraceLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s%(trace)s"},
        "json": {"()": "eventing.tracing.JsonLogFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["trace"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "foodsite.outbox": {"level": "INFO"},
        # The worker runs with --loglevel WARNING (Celery's own chatter); a notification's line stays.
        "notifications": {"level": "INFO"},
        # One line per event a consumer applied (with its trace id): LOG_EVENTS_LEVEL=WARNING silences it.
        "foodsite.kafka.events": {"level": os.environ.get("LOG_EVENTS_LEVEL", "INFO")},
        # Login throttling: a failure, a lock (WARNING) are worth a line; its chatter (INFO) is not.
        "axes": {"level": "WARNING"},
    },
}
