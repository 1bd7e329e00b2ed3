"""One typed settings object, read from the environment.

With nothing set, everything runs embedded under ``./.data``: a SQLite app database, LadybugDB files
under ``.data/graphs``, the in-memory operation store and a Dagster home of its own under
``.data/dagster`` (``deploy/dagster.yaml`` describes the production instance on
dagster-postgres, so the embedded default must not read it). Every variable is documented in
``.env.example``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from provisioning_pipelines.errors import SettingsError
from provisioning_pipelines.storage.defaults import DEFAULT_DATA_DIR, embedded_database_url
from provisioning_pipelines.storage.events import DEFAULT_KEY_PREFIX, DEFAULT_TTL_SECONDS
from provisioning_pipelines.storage.ladybug import DEFAULT_BUFFER_POOL_MB
from provisioning_pipelines.storage.ladybug.queries import QueryLimits

#: The webhook secret's default: fit for the embedded default on one machine, nothing else.
DEVELOPMENT_WEBHOOK_SECRET = "whsec_local_development_only"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: The tiers a query limit is set for (``QUERY_*``: ``tier=value,...``, or one value for all).
QUERY_TIERS = ("ladybug-standard", "ladybug-large", "ladybug-xlarge", "ladybug-shared")
DEFAULT_QUERY_TIMEOUT = ("ladybug-standard=30,ladybug-large=60,ladybug-xlarge=120,"
                         "ladybug-shared=30")
DEFAULT_QUERY_MAX_ROWS = ("ladybug-standard=10000,ladybug-large=10000,"
                          "ladybug-xlarge=10000,ladybug-shared=10000")
DEFAULT_QUERY_MAX_ANSWER_BYTES = ("ladybug-standard=16777216,ladybug-large=33554432,"
                                  "ladybug-xlarge=67108864,ladybug-shared=16777216")
DEFAULT_QUERY_MAX_LENGTH = ("ladybug-standard=100000,ladybug-large=100000,"
                            "ladybug-xlarge=100000,ladybug-shared=100000")


def per_tier(text: str) -> dict[str, float]:
    """``tier=value,...`` (every tier named once, each value positive) or one value for every
    tier, as a dict by tier."""
    text = text.strip()
    try:
        if "=" not in text:
            value = float(text)
            found = dict.fromkeys(QUERY_TIERS, value)
        else:
            found = {}
            for part in (piece.strip() for piece in text.split(",") if piece.strip()):
                tier, _, value_text = part.partition("=")
                tier = tier.strip()
                if tier not in QUERY_TIERS:
                    raise ValueError(f"{tier!r} is not a tier ({', '.join(QUERY_TIERS)})")
                if tier in found:
                    raise ValueError(f"{tier!r} is named twice")
                found[tier] = float(value_text)
    except ValueError as exc:
        raise ValueError(f"expected tier=value,... or one number ({exc})") from None
    missing = [tier for tier in QUERY_TIERS if tier not in found]
    if missing:
        raise ValueError(f"no value for {', '.join(missing)}")
    if not all(value > 0 for value in found.values()):
        raise ValueError("every value must be positive")
    return found

EMBEDDED_DAGSTER_YAML = """\
# The embedded Dagster instance: default SQLite storage under this folder.
# Written by provisioning_pipelines.settings; the production instance is deploy/dagster.yaml.
telemetry:
  enabled: false
"""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    data_dir: Path = Field(DEFAULT_DATA_DIR, validation_alias="DATA_DIR")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    graph_data_dir: Path | None = Field(None, validation_alias="GRAPH_DATA_DIR")
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    redis_key_prefix: str = Field(DEFAULT_KEY_PREFIX, validation_alias="REDIS_KEY_PREFIX")
    redis_require_persistence: bool = Field(False, validation_alias="REDIS_REQUIRE_PERSISTENCE")
    dagster_home: Path | None = Field(None, validation_alias="DAGSTER_HOME")
    dagster_webserver_url: str = Field(
        "http://127.0.0.1:3000", validation_alias="DAGSTER_WEBSERVER_URL"
    )
    direct_graph_provisioning_enabled: bool = Field(
        True, validation_alias="DIRECT_GRAPH_PROVISIONING_ENABLED"
    )
    dagster_materialization_timeout: PositiveFloat = Field(
        15.0, validation_alias="DAGSTER_MATERIALIZATION_TIMEOUT"
    )
    billing_webhook_secret: str = Field(
        DEVELOPMENT_WEBHOOK_SECRET, validation_alias="BILLING_WEBHOOK_SECRET"
    )
    stripe_api_key: str | None = Field(None, validation_alias="STRIPE_API_KEY")
    stripe_api_base: str = Field("https://api.stripe.com", validation_alias="STRIPE_API_BASE")
    billing_outbox_interval_seconds: float = Field(
        5.0, ge=0, validation_alias="BILLING_OUTBOX_INTERVAL_SECONDS"
    )
    session_secret: str | None = Field(None, validation_alias="SESSION_SECRET")
    session_secret_previous: str | None = Field(None, validation_alias="SESSION_SECRET_PREVIOUS")
    cors_allow_origins: str = Field("", validation_alias="CORS_ALLOW_ORIGINS")
    max_attempts: PositiveInt = Field(3, validation_alias="PROVISIONING_MAX_ATTEMPTS")
    claim_lease_seconds: PositiveFloat = Field(
        15.0, validation_alias="PROVISIONING_CLAIM_LEASE_SECONDS"
    )
    resume_interval_seconds: float = Field(
        5.0, ge=0, validation_alias="PROVISIONING_RESUME_INTERVAL_SECONDS"
    )
    housekeeping_interval_seconds: float = Field(
        600.0, ge=0, validation_alias="HOUSEKEEPING_INTERVAL_SECONDS"
    )
    housekeeping_stray_age_seconds: float = Field(
        600.0, ge=0, validation_alias="HOUSEKEEPING_STRAY_AGE_SECONDS"
    )
    shutdown_grace_seconds: float = Field(30.0, ge=0, validation_alias="SHUTDOWN_GRACE_SECONDS")
    deletion_grace_days: float = Field(7.0, ge=0, validation_alias="GRAPH_DELETION_GRACE_DAYS")
    backup_dir: Path | None = Field(None, validation_alias="BACKUP_DIR")
    backup_store_url: str | None = Field(None, validation_alias="BACKUP_STORE_URL")
    backup_store_endpoint_url: str | None = Field(None,
                                                  validation_alias="BACKUP_STORE_ENDPOINT_URL")
    backup_store_storage_class: str | None = Field(
        None, validation_alias="BACKUP_STORE_STORAGE_CLASS")
    final_backup_retention_days: PositiveInt = Field(
        90, validation_alias="FINAL_BACKUP_RETENTION_DAYS"
    )
    unprovisioned_alert_minutes: PositiveFloat = Field(
        15.0, validation_alias="UNPROVISIONED_ALERT_MINUTES"
    )
    retry_backoff_seconds: float = Field(
        30.0, ge=0, validation_alias="PROVISIONING_RETRY_BACKOFF_SECONDS"
    )
    sensor_grace_seconds: float = Field(
        30.0, ge=0, validation_alias="PROVISIONING_SENSOR_GRACE_SECONDS"
    )
    sensor_interval_seconds: PositiveInt = Field(
        30, validation_alias="PROVISIONING_SENSOR_INTERVAL_SECONDS"
    )
    direct_max_concurrency: PositiveInt = Field(8, validation_alias="DIRECT_MAX_CONCURRENCY")
    provisioning_processes: int = Field(0, ge=0, le=64, validation_alias="PROVISIONING_PROCESSES")
    operation_ttl_seconds: PositiveInt = Field(
        DEFAULT_TTL_SECONDS, validation_alias="OPERATION_TTL_SECONDS"
    )
    ladybug_buffer_pool_mb: PositiveInt = Field(
        DEFAULT_BUFFER_POOL_MB, validation_alias="LADYBUG_BUFFER_POOL_MB"
    )
    graph_templates_enabled: bool = Field(True, validation_alias="GRAPH_TEMPLATES_ENABLED")
    local_host_capacity: PositiveInt | None = Field(None, validation_alias="LOCAL_HOST_CAPACITY")
    graph_host_token: str | None = Field(None, validation_alias="GRAPH_HOST_TOKEN")
    local_graph_hosts: bool = Field(True, validation_alias="LOCAL_GRAPH_HOSTS")
    graph_host_timeout_seconds: float = Field(10.0, gt=0,
                                              validation_alias="GRAPH_HOST_TIMEOUT_SECONDS")
    graph_host_work_timeout_seconds: float = Field(
        900.0, gt=0, validation_alias="GRAPH_HOST_WORK_TIMEOUT_SECONDS")
    graph_host_probe_seconds: float = Field(5.0, ge=0, validation_alias="GRAPH_HOST_PROBE_SECONDS")
    graph_host_probe_misses: PositiveInt = Field(3, validation_alias="GRAPH_HOST_PROBE_MISSES")
    max_restores_in_flight: PositiveInt = Field(
        2, validation_alias="MAX_RESTORES_IN_FLIGHT_PER_USER"
    )
    max_backups_in_flight: PositiveInt = Field(
        3, validation_alias="MAX_BACKUPS_IN_FLIGHT_PER_USER"
    )
    max_subgraph_creations_in_flight: PositiveInt = Field(
        5, validation_alias="MAX_SUBGRAPH_CREATIONS_IN_FLIGHT_PER_USER"
    )

    body_read_timeout_seconds: PositiveFloat = Field(
        10.0, validation_alias="BODY_READ_TIMEOUT_SECONDS"
    )
    body_read_max_concurrency: PositiveInt = Field(
        64, validation_alias="BODY_READ_MAX_CONCURRENCY"
    )
    webhook_retention_days: int = Field(30, ge=3, validation_alias="WEBHOOK_RETENTION_DAYS")
    query_timeout_seconds: str = Field(DEFAULT_QUERY_TIMEOUT,
                                       validation_alias="QUERY_TIMEOUT_SECONDS")
    query_max_rows: str = Field(DEFAULT_QUERY_MAX_ROWS, validation_alias="QUERY_MAX_ROWS")
    query_max_answer_bytes: str = Field(DEFAULT_QUERY_MAX_ANSWER_BYTES,
                                        validation_alias="QUERY_MAX_ANSWER_BYTES")
    query_max_length: str = Field(DEFAULT_QUERY_MAX_LENGTH, validation_alias="QUERY_MAX_LENGTH")
    idempotency_key_hours: PositiveFloat = Field(24.0, validation_alias="IDEMPOTENCY_KEY_HOURS")

    metrics_dir: Path | None = Field(None, validation_alias="PROMETHEUS_MULTIPROC_DIR")

    @field_validator("database_url", "redis_url", "graph_data_dir", "dagster_home",
                     "session_secret", "session_secret_previous", "backup_dir", "stripe_api_key",
                     "metrics_dir", "graph_host_token", "backup_store_url",
                     "backup_store_endpoint_url", "backup_store_storage_class", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("query_timeout_seconds", "query_max_rows", "query_max_answer_bytes",
                     "query_max_length")
    @classmethod
    def _per_tier(cls, value: str) -> str:
        per_tier(value)
        return value

    def query_limits(self, tier: str) -> QueryLimits:
        """The bounds on one customer query on a graph of ``tier`` (an unknown tier gets the
        standard one's)."""
        tier = tier if tier in QUERY_TIERS else QUERY_TIERS[0]
        return QueryLimits(
            timeout_seconds=per_tier(self.query_timeout_seconds)[tier],
            max_rows=int(per_tier(self.query_max_rows)[tier]),
            max_answer_bytes=int(per_tier(self.query_max_answer_bytes)[tier]),
            max_query_length=int(per_tier(self.query_max_length)[tier]))

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("expected a sqlite:/// or postgresql+psycopg2:// URL")
        return value

    @field_validator("stripe_api_base")
    @classmethod
    def _known_api_base(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("backup_store_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?",
                                                  value):
            raise ValueError("expected s3://BUCKET/PREFIX (a bucket name of 3 to 63 lowercase "
                             "letters, digits, dots and dashes)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis:// URL")
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        """Each entry one exact origin, written as a browser sends it (so it can match): a
        wildcard would let any site's page act with a signed-in user's cookie."""
        origins = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            if "*" in entry:
                raise ValueError(f"{entry!r}: a wildcard is not allowed; name each origin "
                                 "(https://console.example.com), as credentials are allowed")
            origin = normalized_origin(entry)
            if origin is None:
                raise ValueError(f"{entry!r} is not an origin: expected scheme://host[:port] "
                                 "(http or https, no path)")
            origins.append(origin)
        return ",".join(origins)

    @property
    def embedded(self) -> bool:
        """The embedded default: a SQLite app database and no Redis, one machine's worth.
        Anything else is a shared deployment, which must not run on development secrets."""
        return not self.redis_url and self.resolved_database_url.startswith("sqlite")

    def check_serving(self) -> None:
        """What a server refuses to start with outside the embedded default: the development
        webhook secret (anyone could sign a payment), and no ``SESSION_SECRET`` (sessions would
        be signed with a key derived from the webhook secret)."""
        if self.embedded:
            return
        where = " and ".join(
            ([] if self.resolved_database_url.startswith("sqlite") else ["DATABASE_URL is "
                                                                          "PostgreSQL"])
            + (["REDIS_URL is set"] if self.redis_url else []))
        if self.billing_webhook_secret == DEVELOPMENT_WEBHOOK_SECRET:
            raise SettingsError(
                "invalid settings: BILLING_WEBHOOK_SECRET: the local development default cannot "
                f"be served outside the embedded default ({where}); set the billing "
                "provider's signing secret")
        if not self.session_secret:
            raise SettingsError(
                "invalid settings: SESSION_SECRET: required outside the embedded default "
                f"({where}); set a long random secret, the same on every API worker")

    @property
    def resolved_session_secret(self) -> str:
        """Signs browser sessions. Unset, and only in the embedded default: derived from the
        webhook secret, so a fresh checkout works with nothing set."""
        if self.session_secret:
            return self.session_secret
        if not self.embedded:
            self.check_serving()  # raises: never derived outside the embedded default
        return hmac.new(self.billing_webhook_secret.encode(), b"browser sessions",
                        hashlib.sha256).hexdigest()

    @property
    def session_secrets(self) -> tuple[str, ...]:
        """What a session's token may be signed with: the secret new tokens are signed with,
        then the one it replaced (``SESSION_SECRET_PREVIOUS``) while a rotation is under way."""
        previous = (self.session_secret_previous,) if self.session_secret_previous else ()
        return (self.resolved_session_secret, *previous)

    @property
    def cors_origins(self) -> list[str]:
        return [o for o in self.cors_allow_origins.split(",") if o]

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return embedded_database_url(self.data_dir)

    @property
    def resolved_graph_data_dir(self) -> Path:
        return (self.graph_data_dir or self.data_dir / "graphs").resolve()

    @property
    def resolved_backup_dir(self) -> Path:
        return (self.backup_dir or self.data_dir / "backups").resolve()

    @property
    def resolved_dagster_home(self) -> Path:
        return (self.dagster_home or self.data_dir / "dagster").resolve()

    def prepare_dagster_home(self) -> Path:
        """Make sure DAGSTER_HOME exists; the embedded one gets its own SQLite-backed dagster.yaml.

        Dagster reads ``DAGSTER_HOME`` from the process environment, so it is exported here.
        """
        home = self.resolved_dagster_home
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():  # what Dagster assumes anyway, said quietly
            (home / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML)
        os.environ["DAGSTER_HOME"] = str(home)
        return home


def normalized_origin(text: str) -> str | None:
    """``scheme://host[:port]`` as a browser's ``Origin`` header writes it (lower case, no
    default port), or None for anything else (a path, ``null``, no host)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None
            or parts.password is not None or parts.path not in ("", "/") or parts.query
            or parts.fragment):
        return None
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS[scheme] else "")


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a validation error into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = _env_name(field)
            problems.append(f"{name}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    return alias if isinstance(alias, str) else field.upper()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests build their own with ``load_settings``)."""
    return load_settings()
