"""The checks of a sweep's input that need the machine: the cluster's address, the
storage folder (a bucket's: study.storage.check_remote), the sweep's name, the local
resources. ValueError with one line; nothing is created but by create_storage."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path

from study import journal
from study.storage import is_remote


def check_address(address: str | None) -> None:
    """An unreachable cluster is bad input: say so before Ray tries for minutes."""
    if address is None:
        return
    if address == "auto":
        if not (os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").exists()):
            raise ValueError("--address auto: no running Ray cluster found on this machine "
                             "(start one with `ray start --head`, or leave --address out)")
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--address {address!r}: expected auto or HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ValueError(f"--address {address}: cannot reach a Ray cluster there ({e.strerror or e})") from None


def resolve_storage(text: str) -> Path:
    """--storage as an absolute path; a symlink loop is bad input, not a traceback."""
    try:
        return Path(text).expanduser().resolve()
    except (RuntimeError, OSError) as e:                # 3.11 raises RuntimeError on a loop
        raise ValueError(f"--storage {text}: cannot be resolved ({e})") from None


def check_storage(storage: Path) -> None:
    """Not a file, and under a folder that exists; whether it can be written is found
    out by creating it (create_storage), since access() says yes to root."""
    if storage.exists() and not storage.is_dir():
        raise ValueError(f"--storage {storage}: exists and is not a folder")
    existing = storage
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--storage {storage}: {existing} is not a folder")


def create_storage(storage: Path) -> None:
    """Create the storage folder and check that a file can be written in it, the last
    step of validation; on failure remove every folder this made, and raise. Sweeps
    started together into one new folder race here: each takes what exists."""
    made = []
    try:
        for folder in [*reversed(storage.parents), storage]:
            try:
                folder.mkdir()
                made.append(folder)
            except FileExistsError:               # or another sweep made it just now
                if not folder.is_dir():
                    raise
        probe = storage / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        for folder in reversed(made):
            folder.rmdir()
        raise ValueError(f"--storage {storage}: cannot write there ({e.strerror or e})") from None


def check_name(name: str, storage: Path | str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        # a folder name and an MLflow tag value: no separators, spaces or quotes
        raise ValueError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only")
    existing = Path(tempfile.gettempdir()) if is_remote(storage) else storage     # the mirror's
    while not existing.exists():
        existing = existing.parent
    limit = os.pathconf(existing, "PC_NAME_MAX")
    if len(name.encode()) > limit:
        raise ValueError(f"--name: {len(name)} characters, more than the {limit} this file system allows")


def check_new_sweep(sweep_dir: Path) -> None:
    """A new sweep may reuse a folder whose sweep failed before its first trial, never
    one with trials."""
    if journal.started(sweep_dir / journal.FILE) or any(sweep_dir.glob("results/trials/*.parquet")):
        raise ValueError(f"--name {sweep_dir.name}: {sweep_dir} exists already with trials "
                         f"(use --resume {sweep_dir.name})")


def check_resources(args) -> None:
    """A local cluster cannot give a trial more than this machine has (a remote one is
    checked once joined, study.runner.check_cluster): Ray would wait forever."""
    if args.address is not None:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.cpus_per_trial > cpus:
        raise ValueError(f"--cpus-per-trial {args.cpus_per_trial:g}: this machine has {cpus} CPUs")
    if args.gpus_per_trial:
        import torch
        gpus = torch.cuda.device_count()
        if args.gpus_per_trial > gpus:
            raise ValueError(f"--gpus-per-trial {args.gpus_per_trial:g}: this machine has "
                             f"{gpus or 'no'} GPU{'s' if gpus != 1 else ''}")
