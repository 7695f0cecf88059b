"""Where files live: a local folder, or an object store named by an fsspec URL (``s3://``, ``gs://``, ``az://``, ...).

:func:`open_store` gives a :class:`Store` for an output folder; everything an
export writes, lists, reads or deletes goes through it, so the two kinds
keep the same guarantees by different means:

- **Local folders** (plain paths and ``file://`` URLs): what facepcl always
  did. A file is written under a hidden temporary name, fsynced and renamed
  into place (:func:`facepcl._utils.atomic.atomic_write`); the writer lock is
  an ``flock`` (:class:`facepcl._utils.folders.FolderLock`).
- **Object stores** have no rename, but a single PUT (or a completed
  multipart upload) makes an object appear whole or not at all. A file is
  written locally, uploaded, and its size checked on the store; a transient
  failure (a 5xx answer, a dropped connection) is retried :data:`RETRIES`
  times with exponential backoff from :data:`BACKOFF_SECONDS`. A shard is
  committed by uploading its data object and *then* its manifest, which
  records the data's size and SHA-256 (:meth:`Store.commit`): a data object
  without a manifest is an upload that never finished, which readers ignore
  and ``--resume`` deletes. The writer lock is an object with an owner and a
  lease (:class:`ObjectLock`).

Credentials and endpoints come from each filesystem's own configuration (for
S3 the ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included, and the AWS config
files), or from ``storage_options`` (``--storage-options JSON``), which are
handed to fsspec and never printed or written anywhere. A missing or refused
credential is one :class:`StorageCredentialsError` naming the URL and the fix.

Listing (:func:`list_folder`) walks one "folder" (key prefix up to ``/``) at
a time, and on S3 one page of keys at a time, so memory does not grow with
the number of keys.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._utils.atomic import _FILE_MODE, atomic_write, fsync_path, temp_path, write_text
from .._utils.folders import FolderLock, check_file, file_record
from ..errors import OutputError

#: Attempts of each upload, download or delete on an object store before the operation fails.
RETRIES = 5
#: Wait before the second attempt; doubled before each later one.
BACKOFF_SECONDS = 0.5
#: Keys per listing request on S3 (the most S3 returns at once).
LIST_PAGE = 1000
#: Largest object (a video) copied to a local temporary file for a reader that needs a path.
MAX_COPY_BYTES = 16 << 30
#: How long an object-store lock stays valid without being renewed; its owner renews it every third of that.
LEASE_SECONDS = 60.0

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_CHUNK = 1 << 20
# Exceptions that mean "no usable credential", by class name (botocore, google-auth, azure-identity).
_CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                      "DefaultCredentialsError", "ClientAuthenticationError", "RefreshError"}
# Error codes by which the store refuses the credential it was given.
_REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccessDenied",
            "Forbidden")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure",
           "adl": "azure"}


class StorageError(OutputError):
    """An object store cannot be read or written (the message names the URL, the problem and the fix)."""


class StorageCredentialsError(StorageError):
    """No credential for an object store, or the store refused it."""


class StorageLockedError(StorageError):
    """Another live writer holds an object-store lock (the message names it)."""


def is_url(path: Any) -> bool:
    """Whether ``path`` is a ``scheme://`` URL other than ``file://`` (which is a local path)."""
    return isinstance(path, str) and bool(_URL.match(path)) and not path.lower().startswith("file://")


def local_path(path: str | os.PathLike) -> str:
    """A local path, with a ``file://`` prefix removed."""
    text = os.fspath(path)
    return text[len("file://"):] if isinstance(text, str) and text.lower().startswith("file://") else text


def join(base: str, name: str) -> str:
    """``name`` inside ``base`` (a URL or a local folder)."""
    return f"{base.rstrip('/')}/{name}" if is_url(base) else os.path.join(base, name)


def parse_options(text: str | None) -> dict[str, Any]:
    """``--storage-options``: a JSON object of fsspec filesystem arguments (None: ``{}``).

    Raises:
        ValueError: It is not a JSON object; the message never repeats the text (it may hold secrets).
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--storage-options is not valid JSON (at line {e.lineno} column {e.colno}); pass an "
                         "object such as '{\"anon\": false, \"client_kwargs\": {\"region_name\": \"eu-west-1\"}}'"
                         ) from None
    if not isinstance(value, dict):
        raise ValueError("--storage-options must be a JSON object of filesystem arguments, e.g. '{\"anon\": true}'")
    return value


_FILESYSTEMS: dict[tuple[str, str], Any] = {}
_FS_LOCK = threading.Lock()


def filesystem(url: str, options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` (one per protocol and options) and the path within it.

    Raises:
        StorageError: The protocol is unknown, or its package is not installed
            (the message names the ``facepcl[...]`` extra to install).
    """
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    key = (protocol, json.dumps(dict(options or {}), sort_keys=True, default=str))
    with _FS_LOCK:
        fs = _FILESYSTEMS.get(key)
        if fs is None:
            try:
                cls = fsspec.get_filesystem_class(protocol)
            except (ImportError, ValueError) as e:
                extra = _EXTRAS.get(protocol)
                fix = (f'pip install "facepcl[{extra}]"' if extra else
                       "install the fsspec implementation of that protocol")
                raise StorageError(f"{url}: cannot open {protocol}:// URLs ({e}); {fix}") from None
            fs = cls(**dict(options or {}))
            _FILESYSTEMS[key] = fs
    return fs, fs._strip_protocol(url)


def storage_error(e: BaseException, url: str, action: str) -> StorageError:
    """``e``, met while ``action`` (e.g. "upload") on ``url``, as an error naming the URL, the problem and the fix."""
    names = {c.__name__ for c in type(e).__mro__}
    text = str(e)
    if names & _CREDENTIAL_ERRORS or any(code in text for code in _REFUSED) or isinstance(e, PermissionError):
        return StorageCredentialsError(
            f"{url}: cannot {action} ({type(e).__name__}: {_short(text)}): no credential, or one the store refuses. "
            "Set the filesystem's standard configuration (for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            "AWS_ENDPOINT_URL for an S3-compatible server, or AWS_PROFILE), or pass --storage-options JSON")
    if isinstance(e, FileNotFoundError):
        return StorageError(f"{url}: cannot {action}: no such object or bucket; check the URL")
    return StorageError(f"{url}: cannot {action} ({type(e).__name__}: {_short(text)}); check the URL, the network "
                        "and the store, then run the same command again (with --resume to continue an export)")


def _short(text: str) -> str:
    return text if len(text) <= 300 else text[:300] + "..."


def _permanent(e: BaseException) -> bool:
    """Errors that a retry cannot mend: credentials, missing objects, refused conditions, bad arguments."""
    names = {c.__name__ for c in type(e).__mro__}
    return bool(names & _CREDENTIAL_ERRORS) or isinstance(
        e, (FileNotFoundError, PermissionError, FileExistsError, IsADirectoryError, NotADirectoryError, TypeError,
            ValueError)) or any(code in str(e) for code in (*_REFUSED, "PreconditionFailed", "NoSuchBucket"))


def retry(fn: Callable[[], Any], url: str, action: str, attempts: int | None = None) -> Any:
    """Call ``fn`` until it succeeds, at most ``attempts`` (default :data:`RETRIES`) times, backing off exponentially.

    Raises:
        StorageError: A permanent error at once, or the last transient one
            (:func:`storage_error`), naming ``url`` and the attempts made.
    """
    attempts = RETRIES if attempts is None else attempts
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:
            if isinstance(e, StorageError):
                raise
            if _permanent(e):
                raise storage_error(e, url, action) from e
            if attempt == attempts - 1:
                err = storage_error(e, url, f"{action} after {attempts} attempts")
                raise err from e
            time.sleep(BACKOFF_SECONDS * 2 ** attempt)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------------
# Reading inputs


def stat_url(url: str, options: Mapping[str, Any] | None = None) -> tuple[int, int] | None:
    """``(size, fingerprint)`` of an object (a hash of its ETag, else of its modification time); None if absent.

    ``--resume`` compares it as it compares a local file's ``(size, mtime_ns)``.
    """
    fs, path = filesystem(url, options)
    try:
        info = retry(lambda: fs.info(path), url, "read")
    except StorageError:
        return None
    return _stamp(info)


def _stamp(info: Mapping[str, Any]) -> tuple[int, int]:
    tag = str(info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or "").strip('"')
    return int(info.get("size") or 0), int.from_bytes(hashlib.blake2b(tag.encode(), digest_size=7).digest(), "big")


def read_url(url: str, options: Mapping[str, Any] | None, limit: int | None) -> tuple[bytes, tuple[int, int]]:
    """The bytes of an object and its stamp (:func:`stat_url`), refusing objects over ``limit`` bytes.

    Raises:
        StorageError: It cannot be read (missing, no credential, too large, the store failing).
    """
    fs, path = filesystem(url, options)
    if _pages_s3(fs):  # one GET: the object's size and ETag come with its bytes
        return retry(lambda: _s3_get(fs, path, url, limit), url, "download")
    info = retry(lambda: fs.info(path), url, "read")
    if info.get("type") == "directory":
        raise StorageError(f"{url}: is a folder (a key prefix), not an object; pass the objects inside it")
    _check_size(url, int(info.get("size") or 0), limit)
    data = retry(lambda: fs.cat_file(path), url, "download")
    return data, _stamp(info)


def _check_size(url: str, size: int, limit: int | None) -> None:
    if limit is not None and size > limit:
        raise StorageError(f"{url}: object too large ({size:,} bytes; limit {limit:,}); raise "
                           "facepcl.io.images.MAX_FILE_BYTES if it is a trusted image")


def _s3_get(fs: Any, path: str, url: str, limit: int | None) -> tuple[bytes, tuple[int, int]]:
    from fsspec.asyn import sync

    bucket, _, key = path.partition("/")
    if not key or key.endswith("/"):
        raise StorageError(f"{url}: is a folder (a key prefix), not an object; pass the objects inside it")
    resp = sync(fs.loop, fs._call_s3, "get_object", Bucket=bucket, Key=key)
    body = resp["Body"]
    try:
        size = int(resp.get("ContentLength") or 0)
        _check_size(url, size, limit)
        data = sync(fs.loop, body.read)
    finally:
        body.close()
    if len(data) != size:
        raise OSError(f"the download ended after {len(data)} of {size} bytes")
    return data, _stamp({"size": size, "ETag": resp.get("ETag")})


@contextlib.contextmanager
def local_copy(url: str, options: Mapping[str, Any] | None,
               limit: int | None = None) -> Iterator[tuple[str, tuple[int, int]]]:
    """Download an object to a temporary file (deleted afterwards), for readers that need a path (OpenCV).

    Yields:
        The file's path, and the object's stamp (as :func:`stat_url` gives it, from the same request).
    """
    fs, path = filesystem(url, options)
    info = retry(lambda: fs.info(path), url, "read")
    size = int(info.get("size") or 0)
    if limit is not None and size > limit:
        raise StorageError(f"{url}: object too large to copy ({size:,} bytes; limit {limit:,})")
    with _scratch(path) as tmp:
        retry(lambda: fs.get_file(path, tmp), url, "download")
        yield tmp, _stamp(info)


def list_folder(url: str, options: Mapping[str, Any] | None = None) -> Iterator[tuple[str, bool]] | None:
    """The entries of one folder (key prefix) as ``(name, is_folder)``, streamed in key order; None if it is not one.

    Key order is the store's: names compared as bytes, a sub-folder as
    ``name/``. On S3 the listing is read a page of :data:`LIST_PAGE` keys at
    a time, so memory holds one page whatever the folder's size; other
    filesystems list one folder per call.

    Raises:
        StorageError: The store cannot be listed (credentials, network).
    """
    fs, path = filesystem(url, options)
    base = path.rstrip("/")
    pages = _s3_pages(fs, base, url) if _pages_s3(fs) else _ls_pages(fs, base, url)
    first = next(pages, None)
    if first is None:
        return None
    if any(name == "" for name, _ in first):
        return None  # the URL names an object, not a folder
    return _chain(first, pages)


def _chain(first: list[tuple[str, bool]], pages: Iterator[list[tuple[str, bool]]]) -> Iterator[tuple[str, bool]]:
    yield from first
    for page in pages:
        yield from page


def _key(entry: tuple[str, bool]) -> bytes:
    name, is_dir = entry
    return (name + "/" if is_dir else name).encode("utf-8", "surrogateescape")


def _pages_s3(fs: Any) -> bool:
    return "s3" in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)) and hasattr(
        fs, "_call_s3")


def _ls_pages(fs: Any, base: str, url: str) -> Iterator[list[tuple[str, bool]]]:
    try:
        entries = retry(lambda: fs.ls(base, detail=True, refresh=True), url, "list")
    except StorageError as e:
        if isinstance(e.__cause__, (FileNotFoundError, NotADirectoryError)):
            return
        raise
    out = []
    for entry in entries:
        name = entry["name"].rstrip("/")
        out.append(("" if name == base else name.rsplit("/", 1)[-1], entry.get("type") == "directory"))
    if out:
        yield sorted(out, key=_key)


def _s3_pages(fs: Any, base: str, url: str) -> Iterator[list[tuple[str, bool]]]:
    """ListObjectsV2 pages of one prefix: each page's folders and objects merged in key order."""
    from fsspec.asyn import sync

    bucket, _, key = base.partition("/")
    prefix = f"{key}/" if key else ""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/", "MaxKeys": LIST_PAGE}
    exact = key and not key.endswith("/")
    while True:
        page = retry(lambda: sync(fs.loop, fs._call_s3, "list_objects_v2", **kwargs), url, "list")
        entries = [(p["Prefix"][len(prefix):].rstrip("/"), True) for p in page.get("CommonPrefixes", [])]
        entries += [(c["Key"][len(prefix):], False) for c in page.get("Contents", []) if c["Key"] != prefix]
        if not entries and "ContinuationToken" not in kwargs and exact:
            # no folder of that name: an object, or nothing
            try:
                retry(lambda: fs.info(base), url, "read")
            except StorageError as e:
                if isinstance(e.__cause__, FileNotFoundError):
                    return
                raise
            yield [("", False)]
            return
        if entries:
            yield sorted(entries, key=_key)
        if not page.get("IsTruncated"):
            return
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


# ---------------------------------------------------------------------------------------------------------------
# Output folders


class Store(abc.ABC):
    """An output folder, local or on an object store: names inside it are ``/``-separated relative paths.

    Attributes:
        location: The folder as given (a path or a URL), for messages.
        object_store: True for object stores (no rename; see the module docstring).
    """

    location: str
    object_store: bool = False

    def url(self, name: str) -> str:
        """The full path or URL of ``name``."""
        return join(self.location, name)

    @abc.abstractmethod
    def names(self, folder: str = "") -> list[str]:
        """The file names directly inside ``folder`` (no sub-folders), sorted; [] if it does not exist."""

    @abc.abstractmethod
    def read_bytes(self, name: str) -> bytes | None:
        """The contents of ``name``; None when it does not exist."""

    @abc.abstractmethod
    def exists(self, name: str) -> bool:
        """Whether ``name`` exists."""

    def makedirs(self, folder: str) -> None:  # noqa: B027 (object stores have no folders: nothing to do)
        """Create ``folder`` (local folders; object stores have no folders)."""

    @abc.abstractmethod
    def write_file(self, name: str, write: Callable[[str], object]) -> None:
        """Write ``name`` whole or not at all; ``write`` writes it to the local path it is given.

        Raises:
            OSError: (local) the write failed; nothing replaced ``name``.
            StorageError: (object store) the upload failed after its retries.
        """

    @abc.abstractmethod
    def commit(self, data: str, write: Callable[[str], object], manifest: str,
               describe: Callable[[dict[str, Any]], str], check: Callable[[], None] | None = None) -> None:
        """Commit a data file and the manifest that records it, so that a reader sees both or neither as committed.

        Args:
            data: Name of the data file.
            write: Writes the data file to the local path it is given.
            manifest: Name of the manifest.
            describe: The manifest's text, from the data file's :func:`file_record`.
            check: Called just before the commit point (the writer lock still held?); raises to abort.

        Raises:
            OSError: (local) a write, fsync or rename failed: nothing is committed.
            StorageError: (object store) an upload failed after its retries: no manifest exists.
        """

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete ``name`` (nothing if it does not exist)."""

    @abc.abstractmethod
    def check(self, name: str, record: Mapping[str, Any]) -> str | None:
        """None when ``name`` has the recorded size and SHA-256, else what is wrong (see :func:`check_file`)."""

    @abc.abstractmethod
    def local(self, name: str) -> contextlib.AbstractContextManager[str]:
        """A local path holding ``name``'s contents while the block runs (a download for object stores)."""

    @abc.abstractmethod
    def open(self, name: str) -> Any:
        """A binary file object reading ``name``."""

    def sweep(self, prefixes: tuple[str, ...]) -> None:  # noqa: B027 (object stores leave no temporaries)
        """Delete temporaries a killed writer left, of files whose names start with one of ``prefixes``."""

    @abc.abstractmethod
    def lock(self, name: str, what: str) -> Any:
        """The writer lock ``name`` (``acquire()``, ``release()``, ``check()``), held by one writer at a time."""


class LocalStore(Store):
    """A local folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.location = local_path(folder)

    def url(self, name: str) -> str:
        return os.path.join(self.location, *name.split("/"))

    def names(self, folder: str = "") -> list[str]:
        try:
            with os.scandir(self.url(folder) if folder else self.location) as it:
                return sorted(e.name for e in it if not e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_bytes(self, name: str) -> bytes | None:
        try:
            with open(self.url(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def exists(self, name: str) -> bool:
        return os.path.exists(self.url(name))

    def makedirs(self, folder: str) -> None:
        os.makedirs(self.url(folder) if folder else self.location, exist_ok=True)

    def write_file(self, name: str, write: Callable[[str], object]) -> None:
        atomic_write(self.url(name), write)

    def commit(self, data: str, write: Callable[[str], object], manifest: str,
               describe: Callable[[dict[str, Any]], str], check: Callable[[], None] | None = None) -> None:
        """Local order: data under a temporary name (fsynced), the manifest (atomically), then the data renamed.

        The rename is the commit point: a manifest whose data file is missing
        is a shard in flight (``--resume`` drops it), and a data file without
        a manifest is never left by this order.
        """
        dest = self.url(data)
        folder = os.path.dirname(dest)
        tmp = temp_path(dest)
        manifest_path = self.url(manifest)
        wrote_manifest = False
        try:
            write(tmp)
            os.chmod(tmp, _FILE_MODE)  # some writers (safetensors) create owner-only files
            fsync_path(tmp)
            text = describe(file_record(tmp))
            if check is not None:
                check()
            atomic_write(manifest_path, lambda t: write_text(t, text))
            wrote_manifest = True
            os.replace(tmp, dest)
            fsync_path(folder, directory=True)
        except OSError:
            if wrote_manifest and not os.path.exists(dest):
                with contextlib.suppress(OSError):
                    os.unlink(manifest_path)
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.url(name))

    def check(self, name: str, record: Mapping[str, Any]) -> str | None:
        return check_file(self.url(name), record)

    @contextlib.contextmanager
    def local(self, name: str) -> Iterator[str]:
        yield self.url(name)

    def open(self, name: str) -> Any:
        return open(self.url(name), "rb")

    def sweep(self, prefixes: tuple[str, ...]) -> None:
        import glob

        for prefix in prefixes:
            folder, base = prefix.rpartition("/")[::2]
            where = self.url(folder) if folder else self.location
            for tmp in glob.glob(os.path.join(glob.escape(where), f".{glob.escape(base)}*.tmp-*")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def lock(self, name: str, what: str) -> Any:
        folder, base = os.path.split(self.url(name))
        return FolderLock(folder, what, name=base)



class ObjectStore(Store):
    """A folder (key prefix) on an object store reached through fsspec (see the module docstring).

    Args:
        url: ``scheme://bucket/prefix``.
        options: fsspec filesystem arguments (never printed or written).
    """

    object_store = True

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.location = url.rstrip("/")
        self.options = dict(options or {})
        self.fs, self.root = filesystem(self.location, self.options)
        self.root = self.root.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def names(self, folder: str = "") -> list[str]:
        listed = list_folder(self.url(folder) if folder else self.location, self.options)
        return sorted(n for n, is_dir in listed or () if not is_dir)  # an export's own files: thousands at most

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return retry(lambda: self.fs.cat_file(self._path(name)), self.url(name), "read")
        except StorageError as e:
            if isinstance(e.__cause__, FileNotFoundError):
                return None
            raise

    def exists(self, name: str) -> bool:
        return self._info(name) is not None

    def _info(self, name: str) -> dict[str, Any] | None:
        """The object's fresh metadata (one HEAD request, retried), or None when it does not exist."""
        path = self._path(name)
        self.fs.invalidate_cache(path)
        try:
            return retry(lambda: self.fs.info(path), self.url(name), "read")
        except StorageError as e:
            if isinstance(e.__cause__, FileNotFoundError):
                return None
            raise

    def _upload(self, local: str, name: str, size: int) -> str | None:
        """Upload a local file to ``name``, check the object's size; returns its ETag (None if the store has none)."""
        path, url = self._path(name), self.url(name)

        def put() -> str | None:
            self.fs.put_file(local, path)
            self.fs.invalidate_cache(path)
            info = self.fs.info(path)
            if info.get("size") != size:
                raise OSError(f"the uploaded object holds {info.get('size')} bytes, the file {size}")
            return _etag(info)

        return retry(put, url, "upload")

    def write_file(self, name: str, write: Callable[[str], object]) -> None:
        with _scratch(name) as tmp:
            write(tmp)
            self._upload(tmp, name, os.path.getsize(tmp))

    def commit(self, data: str, write: Callable[[str], object], manifest: str,
               describe: Callable[[dict[str, Any]], str], check: Callable[[], None] | None = None) -> None:
        """Object-store order: the data object (uploaded, its size checked), then the manifest object.

        The manifest's PUT is the commit point. A failed data upload leaves at
        most a data object without a manifest (an orphan, ignored by readers
        and deleted by ``--resume``); a failed manifest upload deletes the data
        object it would have recorded, as far as the store lets it.
        """
        with _scratch(data) as tmp:
            write(tmp)
            record = file_record(tmp)
            etag = self._upload(tmp, data, record["size"])
        text = describe(record if etag is None else {**record, "etag": etag})
        try:
            if check is not None:
                check()
            self.write_file(manifest, lambda t: write_text(t, text))
        except BaseException:
            with contextlib.suppress(Exception):
                self.delete(data)
            raise

    def delete(self, name: str) -> None:
        path = self._path(name)

        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(path)
            self.fs.invalidate_cache(path)

        retry(rm, self.url(name), "delete")

    def check(self, name: str, record: Mapping[str, Any]) -> str | None:
        """Size and ETag against the manifest (one HEAD request); without a recorded ETag, the SHA-256 of a download.

        An object's ETag changes whenever it is written again, so an
        unchanged ETag with the recorded size is the object that was committed.
        """
        info = self._info(name)
        if info is None:
            return "missing"
        size = int(info.get("size") or 0)
        if size != record.get("size"):
            return f"{size} bytes, the manifest says {record.get('size')}"
        if record.get("etag") is not None and _etag(info) is not None:
            if _etag(info) != record["etag"]:
                return "its ETag differs from the manifest's (the object was written again after it was committed)"
            return None
        if "sha256" not in record:
            return None
        with self.local(name) as local:
            return check_file(local, record)

    def open(self, name: str) -> Any:
        """A binary file object reading ``name`` with range requests (pyarrow and numpy read only what they need)."""
        return self.fs.open(self._path(name), "rb")

    @contextlib.contextmanager
    def local(self, name: str) -> Iterator[str]:
        with local_copy(self.url(name), self.options) as (path, _):
            yield path

    def lock(self, name: str, what: str) -> ObjectLock:
        return ObjectLock(self, name, what)


def _etag(info: Mapping[str, Any]) -> str | None:
    tag = info.get("ETag") or info.get("etag")
    return str(tag).strip('"') if tag else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def _scratch(name: str) -> Iterator[str]:
    fd, tmp = tempfile.mkstemp(prefix="facepcl-", suffix=os.path.splitext(name)[1])
    os.close(fd)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def open_store(location: str | os.PathLike | Store, options: Mapping[str, Any] | None = None) -> Store:
    """The :class:`Store` of an output folder: a path or ``file://`` URL is local, any other URL an object store."""
    if isinstance(location, Store):
        return location
    text = os.fspath(location)
    return ObjectStore(text, options) if is_url(text) else LocalStore(text)


class ObjectLock:
    """A writer lock on an object store: an object naming its owner, with a lease its owner keeps renewing.

    :meth:`acquire` creates the lock object with a conditional PUT
    (``If-None-Match: *``, which S3 and S3-compatible servers honour), so of
    two writers exactly one creates it; the other is refused, naming the
    owner (host, pid, run id, start and last renewal). A thread renews the
    lease every third of :data:`LEASE_SECONDS`; a lock not renewed for a
    whole lease (its writer was killed or lost the network), or one whose
    owner ran on this machine and whose process is gone (kill -9, then
    ``--resume`` at once), is stale and is taken over with a PUT conditional on the stale object's ETag
    (``If-Match``), so of two writers taking over one stale lock only one
    wins. Filesystems without conditional writes fall back to write, then
    read back and compare the owner (a narrow race remains there). Leases
    compare the writers' clocks: they must agree to within a lease.

    The renewal thread notices when the lock object no longer names this
    writer (taken over after a long stall); :meth:`check` then raises, and
    the export refuses to commit another shard.

    Args:
        store: The object store.
        name: Name of the lock object in the store.
        what: What the lock protects, for messages.
    """

    def __init__(self, store: ObjectStore, name: str, what: str, lease: float | None = None) -> None:
        self.store = store
        self.name = name
        self.what = what
        self.lease = LEASE_SECONDS if lease is None else lease
        self.run = secrets.token_hex(8)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None

    @property
    def held(self) -> bool:
        return self._thread is not None

    def _body(self) -> bytes:
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "run": self.run, "started": self.started,
                 "renewed": time.time(), "lease_seconds": self.lease, "command": " ".join(sys.argv)[:500]}
        return (json.dumps(owner) + "\n").encode()

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(owner, ETag) of the lock object; (None, None) when there is none."""
        fs, path = self.store.fs, self.store._path(self.name)
        fs.invalidate_cache(path)
        try:
            info = retry(lambda: fs.info(path), self.store.url(self.name), "read the lock")
            data = retry(lambda: fs.cat_file(path), self.store.url(self.name), "read the lock")
        except StorageError as e:
            if isinstance(e.__cause__, FileNotFoundError):
                return None, None
            raise
        try:
            owner = json.loads(data)
        except ValueError:
            owner = {}
        return (owner if isinstance(owner, dict) else {}), info.get("ETag")

    def _put(self, **condition: Any) -> bool:
        """PUT the lock object under ``condition``; False when the condition failed."""
        fs, path = self.store.fs, self.store._path(self.name)
        try:
            retry(lambda: fs.pipe_file(path, self._body(), **condition), self.store.url(self.name), "write the lock")
        except StorageError as e:
            cause = e.__cause__
            if isinstance(cause, FileExistsError) or "PreconditionFailed" in str(cause) or "412" in str(cause):
                return False
            raise
        finally:
            fs.invalidate_cache(path)
        return True

    def _describe(self, owner: Mapping[str, Any]) -> str:
        renewed = owner.get("renewed")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(renewed)) if isinstance(renewed, (int, float)) else "?"
        return (f"pid {owner.get('pid')} on {owner.get('host')}, run {owner.get('run')}, lease renewed {when}: "
                f"{owner.get('command')}")

    def _stale(self, owner: Mapping[str, Any]) -> bool:
        renewed, lease = owner.get("renewed"), owner.get("lease_seconds", self.lease)
        if not isinstance(renewed, (int, float)) or not isinstance(lease, (int, float)):
            return True  # damaged: no owner can be renewing it
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            return not _alive(owner["pid"])  # this machine's writer: stale as soon as its process is gone
        return time.time() - renewed > lease

    def acquire(self) -> ObjectLock:
        """Take the lock, or take over a stale one.

        Raises:
            StorageLockedError: Another writer holds a live lease (the message names it).
            StorageError: The store cannot be written.
        """
        url = self.store.url(self.name)
        for _ in range(3):
            if self._create():
                break
            owner, etag = self._read()
            if owner is None:
                continue  # released meanwhile: try again
            if not self._stale(owner):
                raise StorageLockedError(
                    f"{url}: another process is writing this {self.what} ({self._describe(owner)}); wait for it "
                    f"to finish or stop it. A writer that died frees the lock when its lease of "
                    f"{owner.get('lease_seconds')} s runs out; then run again")
            if self._take_over(etag):
                break
        else:
            raise StorageLockedError(f"{url}: other writers keep taking this {self.what}'s lock; run again later")
        self._confirm()
        self._thread = threading.Thread(target=self._renew, name="facepcl-lock-lease", daemon=True)
        self._thread.start()
        return self

    def _create(self) -> bool:
        try:
            return self._put(mode="create")
        except StorageError as e:
            if not isinstance(e.__cause__, TypeError):
                raise
        # No conditional create on this filesystem: create if absent, then read back (_confirm).
        if self._read()[0] is not None:
            return False
        return self._put()

    def _take_over(self, etag: str | None) -> bool:
        if etag is not None:
            try:
                return self._put(IfMatch=etag)
            except StorageError as e:
                if not isinstance(e.__cause__, TypeError):
                    raise
        return self._put()

    def _confirm(self) -> None:
        owner, _ = self._read()
        if owner is None or owner.get("run") != self.run:
            raise StorageLockedError(f"{self.store.url(self.name)}: another writer took this {self.what}'s lock at "
                                     f"the same time ({self._describe(owner or {})}); run again later")

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                owner, etag = self._read()
                if owner is None or owner.get("run") != self.run:
                    self._lost = self._describe(owner or {}) if owner else "the lock object was deleted"
                    return
                self._put(**({"IfMatch": etag} if etag else {}))
            except Exception:  # a renewal that fails is tried again at the next beat: the lease has slack
                if self._stop.is_set():
                    return

    def check(self) -> None:
        """Raise if this writer has lost the lock (see the class docstring)."""
        if self._lost is not None:
            raise StorageLockedError(f"{self.store.url(self.name)}: this run lost its lock on the {self.what} "
                                     f"({self._lost}); another writer took it over. Stop the other writer, then "
                                     "run again with --resume")

    def release(self) -> None:
        """Stop renewing and delete the lock object if it still names this writer (idempotent)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        with contextlib.suppress(Exception):
            owner, _ = self._read()
            if owner is not None and owner.get("run") == self.run:
                self.store.delete(self.name)

    def __enter__(self) -> ObjectLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
