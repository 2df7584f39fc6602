"""S3 connection settings: endpoint, credentials and timeouts as fsspec storage options.

botocore's defaults suit a healthy AWS region but not a pipeline: a closed port costs ~9 s per
call and a server that accepts and never answers hangs for ~7 minutes. lwst uses short connect
timeouts and few attempts (overridable by parameter or ``LWST_S3_*`` variables) and checks the
endpoint once before a run, so a wrong endpoint is one clear error instead of a stuck run.
Endpoint and credentials fall back to the usual AWS variables (``AWS_ENDPOINT_URL_S3``,
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), which botocore reads itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lwst import storage


class StorageUnavailableError(OSError):
    """An object store that cannot be reached or refuses access (one-line reason)."""


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass
class S3Settings:
    """Where and how to talk to S3; None means "let botocore find it" (env, config files)."""

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    region: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
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


def configure(uri: str, storage_options: dict[str, Any]) -> None:
    """Bound s3fs's own retry loop too (a class default of 5, settable only per instance).

    fsspec caches filesystem instances by their arguments, so every later ``url_to_fs`` with the
    same options in this process gets the configured instance.
    """
    if storage.is_local(uri) or not uri.startswith(("s3://", "s3a://")):
        return
    fs = storage.filesystem(uri, **storage_options)
    attempts = storage_options.get("config_kwargs", {}).get("retries", {}).get("max_attempts")
    if attempts:
        fs.retries = max(1, int(attempts))


def check_reachable(uri: str, storage_options: dict[str, Any]) -> None:
    """Fail fast with `StorageUnavailableError` when ``uri``'s bucket cannot be reached.

    Local paths are always reachable (folders are created on write).
    """
    if storage.is_local(uri):
        return
    configure(uri, storage_options)
    fs = storage.filesystem(uri, **storage_options)
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    endpoint = storage_options.get("endpoint_url") or "the default endpoint"
    try:
        fs.invalidate_cache()
        fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        reason = f"bucket {bucket!r} does not exist at {endpoint}"
        raise StorageUnavailableError(f"{uri}: {reason}") from None
    except PermissionError as exc:
        reason = f"access denied at {endpoint} ({_first_line(exc)})"
        raise StorageUnavailableError(f"{uri}: {reason}") from None
    except Exception as exc:  # botocore raises a zoo of connection errors; all mean "unreachable"
        raise StorageUnavailableError(
            f"{uri}: cannot reach {endpoint} ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
