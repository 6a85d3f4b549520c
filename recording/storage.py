"""Where our one copy of each recording lives: a local directory (default) or an S3-compatible
bucket. Objects are already encrypted (recording/crypto.py) when they get here.

Every store offers ``put(key, data)`` (atomic replace: writing the same key twice leaves one
object), ``get(key) -> bytes`` (StorageError if missing), ``exists(key) -> bool``,
``delete(key) -> bool`` (False when it was already gone; never an error for a missing object),
``keys() -> list[str]`` and ``location(key) -> str`` (for the deletion log). Keys are
``YYYY/MM/<RecordingSid>.bin``: one deterministic name per recording, so a retried download
overwrites rather than duplicates.
"""
from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Protocol


PART_PREFIX = ".part-"
PARTS_DIR = ".parts"  # partial files live beside their directory's objects, in this subfolder


class StorageError(RuntimeError):
    """The store could not be reached, or an object it should hold is missing."""


def object_key(recording_sid: str, recorded_at: datetime) -> str:
    """Return the store key of a recording: ``YYYY/MM/<sid>.bin`` (UTC month it was made).
    Raises ValueError for a SID that is not plain letters and digits."""
    if not recording_sid.isascii() or not recording_sid.isalnum():
        raise ValueError(f"unsafe recording SID {recording_sid!r}")
    return f"{recorded_at:%Y/%m}/{recording_sid}.bin"


class RecordingStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def keys(self) -> list[str]: ...
    def location(self, key: str) -> str: ...


class LocalStore:
    """Files under ``root``; written to a temporary file (``<dir>/.parts/.part-<name>-*``),
    fsynced, then renamed into place. Partial files have their own subfolder so that finding
    those of one object (at every put and delete) never lists a month's whole directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        """The file of ``key``. Raises ValueError for a key that could leave the store."""
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"key {key!r} escapes the store")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = None
        try:
            parts = path.parent / PARTS_DIR
            parts.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._remove_parts(path)  # a worker killed before its rename left these behind
            fd, tmp = tempfile.mkstemp(dir=parts, prefix=PART_PREFIX + path.name + "-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            if tmp is not None:
                try:
                    Path(tmp).unlink(missing_ok=True)
                except OSError:
                    pass
            if isinstance(exc, OSError):
                raise StorageError(f"writing {self.location(key)} failed: {exc}") from exc
            raise

    @staticmethod
    def _parts(path: Path) -> list[Path]:
        """Partial files (``.parts/.part-<name>-*``) of the object at ``path``."""
        parts = path.parent / PARTS_DIR
        if not parts.is_dir():
            return []
        return [p for p in parts.glob(PART_PREFIX + path.name + "-*") if p.is_file()]

    def _remove_parts(self, path: Path) -> int:
        removed = 0
        for part in self._parts(path):
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(f"{self.location(key)} is missing") from exc
        except OSError as exc:
            raise StorageError(f"reading {self.location(key)} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).is_file()
        except OSError as exc:
            raise StorageError(f"checking {self.location(key)} failed: {exc}") from exc

    def delete(self, key: str) -> bool:
        """Delete the object and any partial files of it; True if the object or a partial
        file existed."""
        path = self._path(key)
        try:
            removed = self._remove_parts(path)
            try:
                path.unlink()
            except FileNotFoundError:
                return removed > 0
        except OSError as exc:
            raise StorageError(f"deletion of {self.location(key)} failed: {exc}") from exc
        return True

    def keys(self) -> list[str]:
        if not self.root.exists():
            return []
        try:
            return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*.bin") if p.is_file()
                          and not p.name.startswith(PART_PREFIX))
        except OSError as exc:
            raise StorageError(f"listing {self.root} failed: {exc}") from exc

    def partial_files(self) -> list[str]:
        """Leftover ``.part-*`` files (a worker killed between write and rename), relative
        to the root."""
        if not self.root.exists():
            return []
        try:
            return sorted(str(p.relative_to(self.root)) for p in self.root.rglob(PART_PREFIX + "*")
                          if p.is_file())
        except OSError as exc:
            raise StorageError(f"listing {self.root} failed: {exc}") from exc

    def location(self, key: str) -> str:
        return f"local:{self._path(key)}"


class S3Store:
    """Objects in an S3-compatible bucket under ``prefix`` through boto3. ``sse`` is sent as
    ServerSideEncryption on every upload (``AES256``/``aws:kms``; empty: none), ``kms_key_id``
    with ``aws:kms``. Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID, …)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, sse: str = "", kms_key_id: str = "",
                 client: Any = None):
        import boto3

        if not bucket:
            raise ValueError("RECORDINGS_S3_BUCKET is required with RECORDINGS_STORAGE=s3")
        self.bucket = bucket
        self.prefix = prefix
        self.sse = sse
        self.kms_key_id = kms_key_id
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url or None,
                                             region_name=region or None)

    def _errors(self):
        from botocore.exceptions import BotoCoreError, ClientError
        return BotoCoreError, ClientError

    def put(self, key: str, data: bytes) -> None:
        extra: dict[str, str] = {}
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.kms_key_id:
                extra["SSEKMSKeyId"] = self.kms_key_id
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data, **extra)
        except self._errors() as exc:
            raise StorageError(f"upload of {self.location(key)} failed: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self._errors() as exc:
            raise StorageError(f"download of {self.location(key)} failed: {exc}") from exc

    def head(self, key: str) -> dict | None:
        """The object's metadata (HeadObject), or None when it does not exist."""
        _, client_error = self._errors()
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except client_error as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(f"{self.location(key)}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def delete(self, key: str) -> bool:
        """Delete the object and, in a versioned bucket, every version and delete marker of
        it (a plain DeleteObject there only hides the ciphertext behind a delete marker).
        Needs s3:ListBucketVersions and s3:DeleteObjectVersion."""
        existed = self.exists(key)
        full = self.prefix + key
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
            paginator = self.client.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                    if item["Key"] != full:
                        continue
                    existed = existed or item in page.get("Versions", [])
                    self.client.delete_object(Bucket=self.bucket, Key=full,
                                              VersionId=item["VersionId"])
        except self._errors() as exc:
            raise StorageError(f"deletion of {self.location(key)} failed: {exc}") from exc
        return existed

    def keys(self) -> list[str]:
        result = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            result.extend(item["Key"][len(self.prefix):] for item in page.get("Contents", []))
        return sorted(result)

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


def make_store(config: Mapping[str, Any]) -> RecordingStore:
    """Build the store the settings name (RECORDINGS_STORAGE …). Raises ValueError otherwise."""
    kind = config["RECORDINGS_STORAGE"]
    if kind == "local":
        return LocalStore(config["RECORDINGS_DIR"])
    if kind == "s3":
        return S3Store(config["RECORDINGS_S3_BUCKET"], config["RECORDINGS_S3_PREFIX"],
                       endpoint_url=config["RECORDINGS_S3_ENDPOINT_URL"],
                       region=config["RECORDINGS_S3_REGION"], sse=config["RECORDINGS_S3_SSE"],
                       kms_key_id=config["RECORDINGS_S3_KMS_KEY_ID"])
    raise ValueError(f"RECORDINGS_STORAGE must be 'local' or 's3', not {kind!r}")
