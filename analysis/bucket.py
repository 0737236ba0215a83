"""Files in a bucket through pyarrow.fs (s3://, gs://): the few operations the harness
needs, with S3's endpoint and credentials from the standard AWS variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION).

The analysis reads a sweep in a bucket by copying its results/ folder (a few files per
trial, no checkpoints) into a temporary folder (`download`) and reading that as any
local sweep: the loaders' footer checks apply unchanged. (The compaction cache does
not: a download gives every file a new modification time, so rows load from the
per-trial files; correct, slower for very large sweeps.)
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path

def is_remote(storage: str | Path) -> bool:
    """A URI pyarrow.fs resolves (s3://, gs://, ...) rather than a local path."""
    text = str(storage)
    return "://" in text and not text.startswith("file://")


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def open_fs(uri: str, attempts: int = 3):
    """(filesystem, path inside it) for a URI. S3 is built explicitly: the endpoint from
    AWS_ENDPOINT_URL(_S3), short timeouts and few retries (pyarrow's defaults retry for
    minutes against an endpoint that is down)."""
    from pyarrow import fs
    scheme, _, rest = uri.partition("://")
    if scheme != "s3":
        return fs.FileSystem.from_uri(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")   # else the profile's
    s3 = fs.S3FileSystem(endpoint_override=endpoint, region=region, connect_timeout=3, request_timeout=30,
                         retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=attempts))
    return s3, rest.strip("/")


def put_bytes(filesystem, path: str, data: bytes) -> None:
    """One object, whole or not at all: the bytes go to a temporary key first (an upload
    cut short leaves only that), then move over `path` (on S3 a server-side copy)."""
    folder, _, base = path.rpartition("/")
    tmp = f"{folder}/.tmp-{uuid.uuid4().hex[:12]}-{base}"
    with filesystem.open_output_stream(tmp) as f:
        f.write(data)
    filesystem.move(tmp, path)


def get_bytes(filesystem, path: str) -> bytes:
    with filesystem.open_input_stream(path) as f:
        return f.read()


def listing(filesystem, folder: str, recursive: bool = True) -> list:
    """FileInfo of every file under `folder` ([] if there is none)."""
    from pyarrow import fs
    infos = filesystem.get_file_info(fs.FileSelector(folder, recursive=recursive, allow_not_found=True))
    return [i for i in infos if i.type == fs.FileType.File]


def download(uri: str, local: Path, parts: tuple[str, ...]) -> int:
    """Copy the files under `uri`/<part> (a folder or one file) into `local`/<part>,
    skipping temporary objects of an upload cut short; returns how many."""
    from pyarrow import fs
    filesystem, root = open_fs(uri)
    count = 0
    for part in parts:
        infos = listing(filesystem, join(root, part))
        if not infos and filesystem.get_file_info(join(root, part)).type == fs.FileType.File:
            infos = [filesystem.get_file_info(join(root, part))]
        for info in infos:
            name = info.path[len(root) + 1:]
            if any(p.startswith(".") for p in name.split("/")):
                continue
            target = Path(local) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(get_bytes(filesystem, info.path))
            count += 1
    return count


def upload_tree(local: Path, uri: str) -> int:
    """Publish every file under `local` to `uri`/..., each whole (put_bytes); returns how many."""
    filesystem, root = open_fs(uri)
    files = [f for f in sorted(Path(local).rglob("*")) if f.is_file() and not f.name.startswith(".")]
    for file in files:
        put_bytes(filesystem, join(root, *file.relative_to(local).parts), file.read_bytes())
    return len(files)


def local_copy(uri: str, parts: tuple[str, ...] = ("results",)) -> Path:
    """A temporary local copy of a sweep folder in a bucket (its results/ by default)."""
    local = Path(tempfile.mkdtemp(prefix="sweep-")) / uri.rstrip("/").rsplit("/", 1)[-1]
    local.mkdir()
    atexit.register(shutil.rmtree, local.parent, True)
    download(uri, local, parts)
    return local
