"""Heronry settings, read from environment variables (see .env.example).

Defaults are the *embedded* set-up that ``make demo`` runs: SQLite in WAL mode, a Celery broker on the local
file system, media in ``var/media``. Production sets DEBUG=false, SECRET_KEY, DATABASE_URL (PostgreSQL),
CELERY_BROKER_URL (Redis) and the host names; it then gets the hardened settings below.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from labeling import events

from .env import database_from_url, env_bool, env_choice, env_int, env_list, env_patterns, env_str
from .media_storage import media_storage_from_env

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("HERONRY_VAR_DIR", str(BASE_DIR / "var")))

# The demo (`make serve`, config/serve.py) runs with DEBUG off, so visitors get the site's own 404 and 500 pages
# rather than Django's debug pages (which list every route and setting); unlike production it speaks plain HTTP on
# the local machine and WhiteNoise serves static files straight from the apps' folders (no collectstatic step).
DEMO = env_bool("DEMO", False)
DEBUG = env_bool("DEBUG", not DEMO)
_DEV_SECRET_KEY = "django-insecure-heronry-development-key-only-for-debug"
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must not be the development key when DEBUG is false")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "csp",
    # The composition root: creates the file-system broker's folders at start-up (config.apps).
    "config.apps.ProjectConfig",
    "accounts",
    "labeling",
    "trainer",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Refuses oversized bodies with a JSON 413 before anything reads them.
    "labeling.middleware.RequestSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its lock-out response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(env_str("DATABASE_URL", ""), sqlite_fallback_name=str(VAR_DIR / "heronry.sqlite3"))
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
# django-axes first: it refuses logins of locked-out usernames and addresses before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# How clip videos reach the browser after the membership check: "django" streams them (with HTTP Range
# support, fine for development and small teams); "x-accel" hands the file to nginx via X-Accel-Redirect.
MEDIA_SERVING = env_choice("MEDIA_SERVING", "django", {"django", "x-accel"})
MEDIA_ACCEL_PREFIX = env_str("MEDIA_ACCEL_PREFIX", "/protected-media/")
# Lifetime in seconds of the signed media URLs in API responses (clients holding a token have no session), and
# of the object store's presigned URLs the media view redirects to.
MEDIA_URL_MAX_AGE = env_int("MEDIA_URL_MAX_AGE", 3600, minimum=1)
# Where every artefact lives: MEDIA_ROOT ("filesystem") or an S3-compatible bucket ("s3"; config/media_storage.py).
_MEDIA = media_storage_from_env(url_max_age=MEDIA_URL_MAX_AGE)
MEDIA_STORAGE = _MEDIA.kind
if MEDIA_STORAGE != "filesystem" and MEDIA_SERVING == "x-accel":
    raise ImproperlyConfigured("MEDIA_SERVING=x-accel serves files from MEDIA_ROOT; it needs MEDIA_STORAGE=filesystem")
WHITENOISE_USE_FINDERS = DEBUG or DEMO
STORAGES = {
    "default": _MEDIA.storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or DEMO
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Bounded input ---------------------------------------------------------------------------------------
# A request body larger than this is refused with 413 before it is read (uploads get their own limit).
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 1_048_576, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000
# Nested JSON deeper than this is refused with 400 (Python's parser would recurse until it fails).
MAX_JSON_DEPTH = env_int("MAX_JSON_DEPTH", 32, minimum=2)

# --- External data in: rollout uploads and Minari imports (README "Bringing your own data") -----------------
# Upload routes (labeling.middleware.UPLOAD_ROUTES) take bodies up to MAX_UPLOAD_BYTES instead of
# MAX_REQUEST_BYTES; the .npz and the MP4 each must fit in it too.
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 64 * 1_048_576, minimum=1024)
UPLOAD_MAX_STEPS = env_int("UPLOAD_MAX_STEPS", 10_000, minimum=2)  # steps (actions) in one uploaded episode
UPLOAD_MAX_FRAME_SIDE = env_int("UPLOAD_MAX_FRAME_SIDE", 1024, minimum=16)  # pixels, frames and MP4 alike
# The arrays of an .npz once decompressed (a small zip can hold a huge array): refused above this.
UPLOAD_MAX_ARRAY_BYTES = env_int("UPLOAD_MAX_ARRAY_BYTES", 512 * 1_048_576, minimum=1024)
# Minari datasets are imported only from here (the API never reads another server path); nothing is downloaded.
MINARI_DATASETS_PATH = Path(env_str("MINARI_DATASETS_PATH", str(VAR_DIR / "minari")))
MINARI_MAX_EPISODES = env_int("MINARI_MAX_EPISODES", 1000, minimum=1)  # per import

# --- Client addresses, logins ---------------------------------------------------------------------------
# How many reverse proxies the deployment puts in front of Django (docker/: nginx = 1). The client address is
# the socket's with 0, else the entry that many places from the right of X-Forwarded-For: the part a client
# can write itself is never trusted.
NUM_PROXIES = env_int("NUM_PROXIES", 0, minimum=0)
# django-axes: after LOGIN_FAILURE_LIMIT wrong passwords a username, and separately an address, is locked out
# of the login form, the admin login and the token endpoint for LOGIN_COOLOFF_MINUTES.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "accounts.client_ip.client_ip"
# Not axes' reset on success: it also wipes every failure from the address, so logging in to one's own account
# between guesses would reset the count against another username; accounts.lockout forgets only the
# failures of the username that logged in, from that address.
AXES_RESET_ON_SUCCESS = False
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# --- Content-Security-Policy (django-csp) ---------------------------------------------------------------
# Pages load scripts, styles, images and video only from this origin; no inline script, no plugins, no
# framing. Media responses carry their own, stricter `sandbox` policy (labeling/media.py). With an object store,
# posters and videos arrive from its origin (the media view redirects there), so img and media allow it too.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", *_MEDIA.origins],
        "media-src": ["'self'", *_MEDIA.origins],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Cache (rate limits, login lock-outs' counters) ------------------------------------------------------
# Empty: per-process memory (fine for the demo's single web process); production shares one Redis cache so
# every web worker counts the same requests.
CACHE_URL = env_str("CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Celery -------------------------------------------------------------------------------------------
# The embedded default broker is kombu's file-system transport: a real worker process, no server to run.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        # kombu's exchange table; its default is the working directory.
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # How long an unacknowledged task waits before Redis hands it to another worker (a worker that died
    # mid-task). Steps claim their work, so an early redelivery of a long step just waits its turn.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1)}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged only after it finished, and re-queued if its worker died: with tasks that claim
# work by a conditional update and are safe to run twice, that gives at-least-once execution.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = events.QUEUE_DEFAULT
# Task names and their queues live in labeling.events (one place for every name that crosses an app boundary).
CELERY_TASK_ROUTES = events.celery_routes()
CELERY_BEAT_SCHEDULE = events.celery_beat_schedule()
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Heronry -------------------------------------------------------------------------------------------
HERONRY = {
    "LEASE_TTL_SECONDS": env_int("LEASE_TTL_SECONDS", 300, minimum=10),
    "TORCH_DEVICE": env_choice("TORCH_DEVICE", "cpu", {"cpu", "cuda", "auto"}),
    # Torch threads per Celery worker process (config/celery.py): 1, since more threads than free cores make
    # torch's threads spin (20x the CPU time on a loaded 2-core machine); scale with worker processes instead.
    "TORCH_NUM_THREADS": env_int("TORCH_NUM_THREADS", 1, minimum=1),
    "DEMO_PASSWORD": env_str("DEMO_PASSWORD", "heronry"),
    # A run's step (and a clip's render) whose worker has not reported for this long is presumed dead and is
    # claimed again. ITERATION_STALE_SECONDS is its name before runs and loop iterations became one model.
    "RUN_STALE_SECONDS": env_int("RUN_STALE_SECONDS", env_int("ITERATION_STALE_SECONDS", 120, minimum=1), minimum=1),
    # Experiment tracking (trainer/tracking.py): each done iteration's metrics as TensorBoard event files under
    # TRACKING_DIR/<project slug> (a local directory, not media storage: event files are appended to; empty
    # turns them off), and to MLflow when MLFLOW_TRACKING_URI is set (needs `pip install -e .[mlflow]`).
    "TRACKING_DIR": env_str("TRACKING_DIR", str(VAR_DIR / "tracking")),
    "MLFLOW_TRACKING_URI": env_str("MLFLOW_TRACKING_URI", ""),
}

# --- Webhooks (labeling/webhooks.py) ----------------------------------------------------------------------
# Endpoints whose host resolves to a loopback, private, link-local, multicast or reserved address are refused, at
# registration and at every delivery, unless WEBHOOK_ALLOW_PRIVATE (a receiver on the same host or network).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
WEBHOOK_CONNECT_TIMEOUT = env_int("WEBHOOK_CONNECT_TIMEOUT", 5, minimum=1)  # seconds
WEBHOOK_READ_TIMEOUT = env_int("WEBHOOK_READ_TIMEOUT", 10, minimum=1)  # seconds, for the whole response
WEBHOOK_MAX_RESPONSE_BYTES = env_int("WEBHOOK_MAX_RESPONSE_BYTES", 65536, minimum=0)  # read at most; rest dropped
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 5, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 30, minimum=0)  # 30 s, 60 s, 120 s, 240 s
WEBHOOK_JUDGMENT_BATCH_SECONDS = env_int("WEBHOOK_JUDGMENT_BATCH_SECONDS", 60, minimum=0)

# --- Asynchronous exports (labeling/export_jobs.py) ----------------------------------------------------------
EXPORT_JOBS_ACTIVE_MAX = env_int("EXPORT_JOBS_ACTIVE_MAX", 3, minimum=1)  # queued or running per project

# --- Environments ---------------------------------------------------------------------------------------
# Gymnasium ids a project may use (fnmatch patterns): any registered id that matches works without code, its
# factors named as factor sources in the project spec. Default: classic control, Box2D when it is installed,
# MuJoCo v5.
_CLASSIC_CONTROL_IDS = ["CartPole-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1", "Acrobot-v1"]
_BOX2D_IDS = ["LunarLander-v3", "LunarLanderContinuous-v3", "BipedalWalker-v3", "BipedalWalkerHardcore-v3"]
_MUJOCO_IDS = [
    f"{name}-v5"
    for name in (
        "Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
        "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d",
    )
]  # fmt: skip
ALLOWED_ENV_IDS = env_patterns(
    "ALLOWED_ENV_IDS",
    [*_CLASSIC_CONTROL_IDS, *(_BOX2D_IDS if importlib.util.find_spec("Box2D") else []), *_MUJOCO_IDS],
)

# --- REST API -------------------------------------------------------------------------------------------
_RENDERERS = ["rest_framework.renderers.JSONRenderer"]
if DEBUG:
    _RENDERERS.append("rest_framework.renderers.BrowsableAPIRenderer")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.tokens.ApiTokenAuthentication",  # named tokens (hry_…); others fall through to DRF's
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": _RENDERERS,
    "DEFAULT_PARSER_CLASSES": ["labeling.api.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "labeling.api.errors.exception_handler",
    # Per-user limits on the writes that start expensive work (labeling/api/throttles.py maps routes to
    # scopes); judgments and leases are not limited: annotators work fast.
    "DEFAULT_THROTTLE_CLASSES": ["labeling.api.throttles.ActionRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "token": env_str("API_TOKEN_RATE", "30/minute"),
        "rankings": env_str("RANKING_RATE", "20/hour"),
        "runs": env_str("RUN_START_RATE", "30/hour"),
        "exports": env_str("EXPORT_RATE", "60/hour"),
        "uploads": env_str("UPLOAD_RATE", "600/hour"),
    },
    "NUM_PROXIES": NUM_PROXIES,
    # ?format= selects an export format, not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Heronry API",
    "DESCRIPTION": "Human feedback for reinforcement learning: projects, queries, judgments, rankings, exports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"JudgmentChoiceEnum": "labeling.models.Choice"},
    # Path ids use the bounded <id:...> converter (labeling/converters.py): integers of at most 18 digits.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "labeling.api.schema.add_error_responses",
    ],
}

# --- Security (production) ---------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG and not DEMO:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
