"""S3 connection settings: endpoint, credentials and timeouts as fsspec storage options.

botocore's defaults suit a healthy AWS region but not a pipeline: a closed port costs ~9 s per
call and a server that accepts and never answers hangs for ~7 minutes. lwst uses short connect
timeouts and few attempts (overridable by parameter or ``LWST_S3_*`` variables; s3fs's own retry
loop is cut to one pass, botocore already retries) and checks the endpoint once before a run
with a tighter probe (`probe_options`: at most ~15 s), so a wrong or silent endpoint is one
clear error instead of a stuck run. The same probe tells a run whose storage died mid-way to
stop (`unreachable_reason`).
Endpoint and credentials fall back to the usual AWS variables (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), which botocore reads itself.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Any

from lwst import storage
from lwst.failures import first_line
from lwst.storage import StorageUnavailableError  # defined there for `storage.is_transient`


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class S3Settings:
    """Where and how to talk to S3; None means "let botocore find it" (env, config files)."""

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = field(default=None, repr=False)  # never in a log line or a traceback
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 20.0  # no byte for 20 s: a healthy store answers a small PUT in far less
    max_attempts: int = 3

    @classmethod
    def from_env(cls, **overrides: Any) -> S3Settings:
        """Defaults from ``LWST_S3_CONNECT_TIMEOUT`` / ``_READ_TIMEOUT`` / ``_MAX_ATTEMPTS``."""
        settings = cls(
            connect_timeout=_env_float("LWST_S3_CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=_env_float("LWST_S3_READ_TIMEOUT", cls.read_timeout),
            max_attempts=int(_env_float("LWST_S3_MAX_ATTEMPTS", cls.max_attempts)),
        )
        for name, value in overrides.items():
            if value is not None:
                setattr(settings, name, value)
        return settings

    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (JSON-friendly: flow parameters)."""
        options: dict[str, Any] = {
            "config_kwargs": {
                "connect_timeout": self.connect_timeout,
                "read_timeout": self.read_timeout,
                "retries": {"max_attempts": self.max_attempts, "mode": "standard"},
            },
        }
        endpoint = (self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        if endpoint:
            options["endpoint_url"] = endpoint
        if self.key:
            options["key"] = self.key
        if self.secret:
            options["secret"] = self.secret
        if self.region:
            options["client_kwargs"] = {"region_name": self.region}
        return options


def storage_options(endpoint_url: str | None = None, key: str | None = None,
                    secret: str | None = None, region: str | None = None) -> dict[str, Any]:
    """The storage options of these settings over the environment's (`S3Settings.from_env`):
    what every command and flow builds its S3 access from."""
    return S3Settings.from_env(endpoint_url=endpoint_url, key=key, secret=secret,
                               region=region).storage_options()


def configure(uri: str, storage_options: dict[str, Any]) -> None:
    """Bound s3fs's own retry loop too (a class default of 5, settable only per instance).

    fsspec caches filesystem instances by their arguments, so every later ``url_to_fs`` with the
    same options in this process gets the configured instance.
    """
    if storage.is_local(uri) or not uri.startswith(("s3://", "s3a://")):
        return
    fs = storage.filesystem(uri, **storage_options)
    fs.retries = 1  # botocore retries (max_attempts); s3fs's loop on top multiplied the waits


# S3's bucket naming rules (3-63 of a-z 0-9 . -, starting and ending alphanumeric).
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def probe_options(storage_options: dict[str, Any]) -> dict[str, Any]:
    """The same endpoint and credentials with a short fuse: listing a bucket is small, so no
    answer within a few seconds means the endpoint is down, whatever the data timeouts are."""
    options = copy.deepcopy(storage_options)
    kwargs = options.setdefault("config_kwargs", {})
    kwargs["connect_timeout"] = min(float(kwargs.get("connect_timeout", 5)), 5.0)
    kwargs["read_timeout"] = min(float(kwargs.get("read_timeout", 10)), 10.0)
    kwargs["retries"] = {"max_attempts": 1, "mode": "standard"}
    return options


def check_reachable(uri: str, storage_options: dict[str, Any]) -> None:
    """Fail fast with `StorageUnavailableError` when ``uri``'s bucket cannot be reached.

    Local paths are always reachable (folders are created on write).
    """
    if storage.is_local(uri) or storage.protocol(uri) not in storage.S3_PROTOCOLS:
        return
    configure(uri, storage_options)
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    if not BUCKET_PATTERN.fullmatch(bucket):
        raise StorageUnavailableError(
            f"{uri}: invalid bucket name {bucket!r} (S3 bucket names are 3-63 lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit)")
    options = probe_options(storage_options)
    configure(uri, options)
    fs = storage.filesystem(uri, **options)
    endpoint = storage_options.get("endpoint_url") or "the default endpoint"
    try:
        fs.invalidate_cache()
        fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        reason = f"bucket {bucket!r} does not exist at {endpoint}"
        raise StorageUnavailableError(f"{uri}: {reason}") from None
    except PermissionError as exc:
        reason = f"access denied at {endpoint} ({first_line(exc)})"
        raise StorageUnavailableError(f"{uri}: {reason}") from None
    except Exception as exc:  # botocore raises a zoo of connection errors; all mean "unreachable"
        raise StorageUnavailableError(
            f"{uri}: cannot reach {endpoint} ({type(exc).__name__}: {first_line(exc)})"
        ) from None


def unreachable_reason(uri: str, storage_options: dict[str, Any]) -> str | None:
    """Why ``uri``'s storage does not answer now (one line), or None if it does."""
    try:
        check_reachable(uri, storage_options)
    except StorageUnavailableError as exc:
        return str(exc)
    return None
