"""What sections are made of: the section base, a place in an object store, a secret given inline or as a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from taoflow.connectors.errors import ConfigurationError

__all__ = ["MIN_TOKEN_LENGTH", "ObjectStoreEndpoint", "ObjectStoreLocation", "Section", "TokenSource"]

#: The shortest token accepted: a guessable token guards promote, rollback and trigger.
MIN_TOKEN_LENGTH = 16


class Section(BaseModel):
    """A group of settings: unknown keys are errors, every field has a default and a docstring, values are frozen."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class ObjectStoreEndpoint(Section):
    """How an S3-compatible store is reached (credentials come from the AWS chain of the process that reads it)."""

    endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, Ceph, ...); unset for AWS."""
    region: str | None = None
    """AWS region of the bucket."""


class ObjectStoreLocation(ObjectStoreEndpoint):
    """A place in an object store (`s3://bucket/prefix`) or, where the section says so, a folder."""

    uri: str | None = Field(None, pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.+)$")
    """`s3://bucket/prefix`, or (where the section allows one) an absolute path every side mounts; unset: none."""

    @property
    def on_s3(self) -> bool:
        return self.uri is not None and self.uri.startswith("s3://")

    def bucket_and_prefix(self) -> tuple[str, str]:
        """The bucket and key prefix of an `s3://` uri."""
        if not self.on_s3 or self.uri is None:
            raise ConfigurationError(f"{self.uri!r} is not an s3:// location")
        bucket, _, prefix = self.uri.removeprefix("s3://").partition("/")
        return bucket, prefix


class TokenSource(Section):
    """A secret written inline (`value`, from an environment variable) or read from a file (a mounted secret).

    A plain string where a token is expected is its value: `TAOFLOW_DAEMON__ADMIN_TOKEN=...` sets
    `daemon.admin_token.value`."""

    value: SecretStr | None = None
    """The token itself; set it from a secret (an environment variable), never in a file under version control."""
    file: Path | None = None
    """A file holding the token (a mounted secret); used when value is unset."""

    @model_validator(mode="before")
    @classmethod
    def _plain_string_is_the_value(cls, data: Any) -> Any:
        return {"value": data} if isinstance(data, str | SecretStr) else data

    @property
    def given(self) -> bool:
        """Whether a value or a file is set (the file may still turn out unreadable)."""
        return bool(self.value is not None and self.value.get_secret_value()) or self.file is not None

    def read(self, setting: str, *, what: str) -> str | None:
        """The token, or None when neither is set. `setting` names it in messages (`daemon.admin_token`), `what`
        says whose it is (`admin`). A file that cannot be read, an empty one or a short token is an error."""
        token, where = "", setting
        if self.value is not None and self.value.get_secret_value():
            token = self.value.get_secret_value()
        elif self.file is not None:
            where = f"{setting}.file ({self.file})"
            try:
                token = self.file.read_text().strip()
            except OSError as exc:
                raise ConfigurationError(f"cannot read {setting}.file: {exc}") from None
            if not token:
                raise ConfigurationError(f"{where} is empty: write the token into it (openssl rand -hex 32)")
        if not token:
            return None
        if len(token) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(
                f"the {what} token in {where} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                "(openssl rand -hex 32)"
            )
        return token
