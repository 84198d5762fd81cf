"""Where bytes live: one resolver from a URI (local path or ``s3://bucket/key``) to a pyarrow
filesystem and a path inside it, plus a boto3 client configured the same way.

Everything that reads or writes datasets, corpora or checkpoints goes through `resolve`, so
S3 behaves exactly like local disk (memory maps locally, ranged reads on S3). The S3 endpoint
is taken from ``TRIMODAL_S3_ENDPOINT``, else the AWS SDK's ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` (e.g. ``http://127.0.0.1:9000`` for MinIO or a test server); credentials
and region follow the AWS SDK's usual chain (env, profile, instance role).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import os
import threading
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

from trimodal.errors import InputError

log = logging.getLogger(__name__)


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def s3_endpoint() -> str | None:
    for var in ("TRIMODAL_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs: dict = {"region": region or "us-east-1"}
    if endpoint:
        u = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
        kwargs["endpoint_override"] = u.netloc
        kwargs["scheme"] = u.scheme or "http"
        # Test servers and MinIO do not do virtual-host addressing.
        kwargs["force_virtual_addressing"] = False
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["access_key"] = key
        kwargs["secret_key"] = secret
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


def filesystem_for(uri: str) -> pafs.FileSystem:
    if is_s3(uri):
        return _s3_filesystem(s3_endpoint(), os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    return pafs.LocalFileSystem(use_mmap=True)


@dataclass(frozen=True)
class Location:
    """A resolved URI: the filesystem, the path inside it, and the original URI for messages."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        p = "/".join([self.path.rstrip("/"), *[s.strip("/") for s in parts]])
        u = "/".join([self.uri.rstrip("/"), *[s.strip("/") for s in parts]])
        return Location(self.fs, p, u)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return f.read()
        except (OSError, FileNotFoundError) as e:
            raise InputError(f"cannot read {self.uri}: {e}") from e

    def write_bytes_atomic(self, data: bytes) -> None:
        """Write so that a reader sees either the old object or the whole new one.

        S3 PUTs are atomic already; on local disk write a temp file, fsync, rename.
        """
        if isinstance(self.fs, pafs.LocalFileSystem):
            write_local_atomic(self.path, data)
        else:
            # One PUT: atomic on S3. (pyarrow's output stream uses multipart uploads, whose
            # completion some S3-compatible servers answer in ways it rejects.)
            bucket, _, key = self.path.partition("/")
            boto3_client().put_object(Bucket=bucket, Key=key, Body=data)

    def makedirs(self) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):
            os.makedirs(self.path, exist_ok=True)


TMP_MARK = ".tmp-"  # temp files of atomic writes are named <final name>.tmp-<pid>-<thread>


@contextlib.contextmanager
def atomic_local_path(path: str | os.PathLike):
    """Yield a temp path beside `path` to write to; when the block ends without an error, the
    file is fsynced and renamed over `path` (so a reader sees the old file or the whole new
    one), else removed. For writers that need a path (torch, tarfile, a codec's save)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_local_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to a local file atomically (see `atomic_local_path`)."""
    with atomic_local_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def resolve(uri: str | os.PathLike) -> Location:
    """URI → Location. Local paths are made absolute; ``s3://b/k`` becomes path ``b/k``."""
    uri = str(uri)
    if is_s3(uri):
        return Location(filesystem_for(uri), uri[len("s3://") :].rstrip("/"), uri.rstrip("/"))
    path = os.path.abspath(os.path.expanduser(uri))
    return Location(filesystem_for(path), path, path)


def expand(pattern: str) -> list[str]:
    """Expand a local or s3:// glob (``*``, ``?``, ``**``) or directory into sorted file URIs.

    A directory expands to every file below it, dangling symlinks included (reading one fails
    that input, loudly). A pattern matching nothing is an InputError naming it, because a
    silently empty source is almost always a typo.
    """
    pattern = str(pattern)
    loc = resolve(pattern.split("*")[0].split("?")[0] if any(c in pattern for c in "*?") else pattern)
    has_glob = any(c in pattern for c in "*?[")
    if not has_glob:
        info = loc.fs.get_file_info(loc.path)
        if info.type == pafs.FileType.File:
            return [loc.uri]
        if info.type == pafs.FileType.NotFound:
            target = dangling_symlink(loc.uri)
            raise InputError(
                f"input not found: {pattern}" + (f" (a symlink to {target}, which does not exist)" if target else "")
            )
        return _list_files(loc)
    # Glob: list from the deepest non-glob directory, then match.
    full = resolve(pattern)
    base_path = full.path
    static = base_path
    while any(c in static for c in "*?["):
        static = static.rsplit("/", 1)[0]
    base = Location(full.fs, static, _uri_of(full, static))
    if base.fs.get_file_info(base.path).type != pafs.FileType.Directory:
        raise InputError(f"no files match {pattern}")
    out = [u for u in _list_files(base) if glob_match(_path_of(u), base_path)]
    if not out:
        raise InputError(f"no files match {pattern}")
    return out


def _uri_of(loc: Location, path: str) -> str:
    return f"s3://{path}" if is_s3(loc.uri) else path


def _path_of(uri: str) -> str:
    return uri[len("s3://") :] if is_s3(uri) else uri


def _list_files(loc: Location) -> list[str]:
    """Every visible file below a directory, sorted. Names starting with ``.`` or ``_`` are
    hidden (``_SUCCESS``, ``.crc`` files). Locally, dangling symlinks are listed too, so that
    reading them fails loudly as an input instead of the file vanishing from the corpus."""
    if isinstance(loc.fs, pafs.LocalFileSystem):
        files = _walk_local(loc.path)
    else:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
        files = [i.path for i in infos if i.type == pafs.FileType.File]
    files = sorted(f for f in files if not os.path.basename(f).startswith((".", "_")))
    return [_uri_of(loc, f) for f in files]


def _walk_local(top: str) -> list[str]:
    """Files below `top`, following symlinked directories (as pyarrow's selector does) except
    back into one of their own ancestors (a loop), plus every dangling symlink.

    Not pyarrow's recursive selector: it drops dangling symlinks without a word (a corpus
    assembled from links to a mount that moved would silently shrink) and follows link loops
    until the path gets too long."""
    out: list[str] = []
    stack = [(top, frozenset([os.path.realpath(top)]))]
    while stack:
        d, chain = stack.pop()
        with os.scandir(d) as it:
            entries = list(it)
        for e in entries:
            if e.is_dir():
                real = os.path.realpath(e.path)
                if real in chain:
                    log.warning("not following %s: a symlink back into %s", e.path, real)
                    continue
                stack.append((e.path, chain | {real}))
            elif e.is_file() or (e.is_symlink() and not os.path.exists(e.path)):
                out.append(e.path)
    return out


def dangling_symlink(uri: str) -> str | None:
    """The target of `uri` if it is a local symlink to nothing, else None (for messages)."""
    if is_s3(uri) or not os.path.islink(uri) or os.path.exists(uri):
        return None
    return os.readlink(uri)


def glob_match(path: str, pattern: str) -> bool:
    # fnmatch's '*' crosses '/', which is what '**' should do; make single '*' stay in a level.
    if "**" in pattern:
        return fnmatch.fnmatchcase(path, pattern.replace("**/", "*").replace("**", "*"))
    return len(path.split("/")) == len(pattern.split("/")) and fnmatch.fnmatchcase(path, pattern)


def list_files(root: Location) -> list[str]:
    """Every file below `root`, as paths relative to it, sorted (hidden files included)."""
    sel = pafs.FileSelector(root.path, recursive=True, allow_not_found=True)
    base = root.path.rstrip("/") + "/"
    return sorted(i.path[len(base) :] for i in root.fs.get_file_info(sel) if i.type == pafs.FileType.File)


def boto3_client():
    """A boto3 S3 client using the same endpoint resolution as the pyarrow filesystem."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
