"""Where a sweep folder lives: a local (or NFS) path, or a bucket that pyarrow.fs
reaches (`s3://bucket/prefix`, `gs://bucket/prefix`).

With a bucket, nothing is mounted and no disk is shared:

    Tune (driver and workers)  -> the bucket directly: trial checkpoints, experiment state
    the driver's own files     -> a local staging folder, the *mirror* (a temporary folder),
      sweep.json, journal.jsonl,  each file published to the bucket as soon as it is written
      mlflow.json, results/,     (`publish`): uploaded to a temporary object, then moved over
      report/                     its key, so a reader of the bucket sees the old object or the
                                  whole new one, never a torn row
    --resume, analysis         -> `fetch` copies the driver's files back into a fresh mirror

Every other module keeps working on local paths (the mirror's); the write points call
`publish(path)`, a no-op for a path outside every mirror. Credentials and endpoint
come from the standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL, AWS_DEFAULT_REGION / AWS_REGION, AWS_PROFILE), on every node.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from analysis.bucket import download, get_bytes, is_remote, join, listing, open_fs, put_bytes

__all__ = ["get_bytes", "is_remote", "join", "listing", "open_fs", "put_bytes", "Mirror", "stage", "publish",
           "mirror_of", "tune_storage", "check_remote"]

DRIVER_FILES = ("sweep.json", "journal.jsonl", "mlflow.json", "results")
SCHEMES = ("s3", "gs", "gcs")       # object stores every node can reach (memory:// could not)
CHECK_S = 20.0                      # the whole preflight of a bucket, at most
_MIRRORS: dict[Path, "Mirror"] = {}  # local folder -> its bucket folder, in this process


class Mirror:
    """A local folder standing for a folder in a bucket (see the module docstring)."""

    def __init__(self, local: Path, uri: str):
        self.local, self.uri = Path(local), uri.rstrip("/")
        self.fs, self.path = open_fs(self.uri)
        self.failed: set[Path] = set()
        self._lock = threading.Lock()

    def key(self, file: Path) -> str:
        return join(self.path, *Path(file).relative_to(self.local).parts)

    def publish(self, file: Path) -> None:
        """Upload one local file (read whole first) to its key; a failure is retried at
        `sync`, never raised into the sweep (the local file is the record meanwhile)."""
        try:
            with self._lock:                     # in order: a newer version never lands first
                put_bytes(self.fs, self.key(file), Path(file).read_bytes())
                self.failed.discard(Path(file))
        except Exception as e:                   # pyarrow raises several kinds
            with self._lock:
                if not self.failed:
                    print(f"warning: {self.uri}: could not publish {Path(file).name} ({e}); retried at the "
                          "sweep's end", file=sys.stderr)
                self.failed.add(Path(file))

    def publish_tree(self, folder: Path) -> None:
        for file in sorted(Path(folder).rglob("*")):
            if file.is_file() and not file.name.startswith("."):
                self.publish(file)

    def sync(self) -> list[Path]:
        """Publish again what failed; returns what still could not be."""
        for file in sorted(self.failed):
            if file.exists():
                self.publish(file)
            else:
                self.failed.discard(file)
        return sorted(self.failed)

    def fetch(self, parts=DRIVER_FILES) -> int:
        """Copy the bucket's files under `parts` into the mirror; returns how many."""
        return download(self.uri, self.local, parts)


def stage(uri: str, name: str) -> Mirror:
    """A fresh mirror of the bucket folder `uri` (the storage root) for sweep `name`,
    registered for `publish`."""
    local = Path(tempfile.mkdtemp(prefix="sweep-mirror-")) / name
    local.mkdir()
    mirror = Mirror(local, join(uri, name))
    _MIRRORS[local] = mirror
    mirror.fetch()
    atexit.register(_clean, mirror)
    return mirror


def _clean(mirror: Mirror) -> None:
    """At exit: remove the mirror once the bucket has everything in it; else say where it is."""
    if mirror.sync():
        print(f"warning: {len(mirror.failed)} file(s) could not be published to {mirror.uri}; they are in "
              f"{mirror.local}", file=sys.stderr)
        return
    shutil.rmtree(mirror.local.parent, ignore_errors=True)


def mirror_of(path: Path) -> Mirror | None:
    path = Path(path)
    return next((m for root, m in _MIRRORS.items() if path == root or root in path.parents), None)


def publish(path: Path) -> None:
    """Publish a file just written to the bucket its folder mirrors (no-op otherwise)."""
    mirror = mirror_of(path)
    if mirror is not None:
        mirror.publish(Path(path))


def tune_storage(storage: str):
    """(storage_path, storage_filesystem) for Tune's RunConfig."""
    if not is_remote(storage):
        return storage, None
    filesystem, path = open_fs(storage)
    return path, filesystem


def _credentials() -> bool:
    """Whether S3 credentials are set up anywhere the AWS SDK looks (without them pyarrow
    sends unsigned requests, which fail later and less clearly)."""
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or \
            env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    files = [env.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), env.get("AWS_CONFIG_FILE", "~/.aws/config")]
    if any(Path(f).expanduser().is_file() for f in files):
        return True
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return False
    import socket
    try:                                         # an instance role (EC2): its metadata service answers
        socket.create_connection(("169.254.169.254", 80), timeout=0.3).close()
        return True
    except OSError:
        return False


class _Unusable(Exception):
    """What the probe found wrong with a bucket that answered."""


def _probe(uri: str) -> None:
    from pyarrow import fs
    filesystem, path = open_fs(uri, attempts=1)
    bucket = path.split("/")[0]
    try:
        found = filesystem.get_file_info(bucket).type != fs.FileType.NotFound
    except OSError as e:
        if "ACCESS_DENIED" not in str(e).upper():
            raise
        raise _Unusable(f"no permission to use bucket {bucket!r} ({first_line(e)})") from None
    if not found:
        raise _Unusable(f"bucket {bucket!r} does not exist (create it first)")
    probe = join(path, f".write-test-{uuid.uuid4().hex[:12]}")
    try:
        with filesystem.open_output_stream(probe) as f:
            f.write(b"")
    except OSError as e:
        raise _Unusable(f"cannot write there ({first_line(e)})") from None
    filesystem.delete_file(probe)


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def check_remote(uri: str, seconds: float = CHECK_S) -> None:
    """Refuse, in seconds and with one line, a bucket the sweep could not use: an
    unknown scheme, missing credentials, an endpoint that does not answer, a bucket
    that does not exist, no write permission."""
    scheme, _, rest = uri.partition("://")
    if scheme not in SCHEMES:
        raise ValueError(f"--storage {uri}: buckets are {', '.join(s + '://' for s in SCHEMES)} (a folder is a "
                         "plain path)")
    if not rest.strip("/"):
        raise ValueError(f"--storage {uri}: name a bucket, e.g. {scheme}://BUCKET/PREFIX")
    if scheme == "s3" and not _credentials():
        raise ValueError(f"--storage {uri}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
    outcome: list[BaseException | None] = []

    def run():
        try:
            _probe(uri)
            outcome.append(None)
        except BaseException as e:               # reported below, in the caller's thread
            outcome.append(e)
    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(seconds)
    if not outcome:
        raise ValueError(f"--storage {uri}: no answer in {seconds:g} s (is the endpoint "
                         f"{os.environ.get('AWS_ENDPOINT_URL') or 'of the provider'} reachable?)")
    error = outcome[0]
    if isinstance(error, _Unusable):
        raise ValueError(f"--storage {uri}: {error}") from None
    if error is not None:
        raise ValueError(f"--storage {uri}: cannot reach the bucket after {time.monotonic() - started:.1f} s "
                         f"({first_line(error)})") from None
