"""One driver per sweep folder: an exclusively created lock file, with stale-lock detection.

    <sweep>/sweep.lock   {"host": ..., "pid": ..., "boot": ..., "since": ...}

Two sweeps started at once with the same --name (or a --resume of a sweep that is
still running) would otherwise write into one folder. The claim is
`open(O_CREAT | O_EXCL)`, atomic on local file systems and on NFS v3+. The holder
refreshes the file's modification time every HEARTBEAT_S seconds.

A lock is stale when its holder is gone: on the same host, no process has its pid
with its start time; on another host (a shared folder), its heartbeat is older
than STALE_S. A stale lock is moved aside (rename, atomic) and the claim retried,
so two drivers breaking the same stale lock cannot both win.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

FILE = "sweep.lock"
HEARTBEAT_S = 20.0
STALE_S = 120.0


class Claimed(ValueError):
    """The sweep folder is held by a running driver (the message names it)."""


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None
    when there is no such process: a pid reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                      # someone else's process
        return True
    return True


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _holder_alive(holder: dict, mtime: float) -> bool:
    if holder.get("host") == socket.gethostname() and holder.get("boot") == _boot_id():
        pid = int(holder.get("pid", -1))
        if holder.get("pidns") != _pid_namespace():
            return time.time() - mtime < STALE_S     # another container: its pids are not ours
        ticks = _start_ticks(pid)
        if holder.get("ticks") is None or ticks is None:
            # no /proc (macOS), or another user's process hidden (hidepid): the pid alone
            return pid > 0 and _pid_exists(pid)
        return ticks == holder["ticks"]
    return time.time() - mtime < STALE_S


def describe(holder: dict) -> str:
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


class SweepLock:
    """The claim on one sweep folder; `release` (or process death, for a same-host
    successor) gives it up."""

    def __init__(self, sweep_dir: Path):
        self.path = Path(sweep_dir) / FILE
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "boot": _boot_id(),
                       "pidns": _pid_namespace(),
                       "ticks": _start_ticks(os.getpid()),
                       "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        self._stop = threading.Event()

    def acquire(self) -> "SweepLock":
        """Claim the folder (created if missing) or raise Claimed naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._break_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.record, f)
            threading.Thread(target=self._heartbeat, daemon=True).start()
            return self
        raise Claimed(f"{self.path.parent}: could not claim the sweep folder (its lock keeps changing)")

    def _break_if_stale(self) -> None:
        try:
            text, mtime = self.path.read_text(), self.path.stat().st_mtime
        except FileNotFoundError:
            return                                   # released meanwhile: claim again
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}                              # cut short while written: judged by its age
        if _holder_alive(holder, mtime) or (not holder and time.time() - mtime < HEARTBEAT_S):
            raise Claimed(f"{self.path.parent} is in use by a running sweep ({describe(holder)}); "
                          f"if that sweep is gone, remove {self.path}")
        aside = self.path.with_name(f"{FILE}.stale-{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return                                   # another driver broke it first
        try:
            if aside.read_text() != text:            # moved a fresh claim, not the stale one
                os.link(aside, self.path)
        except FileExistsError:
            pass
        except OSError as e:                         # no hard links here (SMB, exFAT)
            raise Claimed(f"{self.path.parent}: could not claim the sweep folder ({e})") from None
        finally:
            aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                print(f"warning: {self.path} was removed while this sweep runs; another driver may "
                      "claim the folder", file=sys.stderr)
                return
            except OSError:
                continue                             # a passing NFS error: the next beat retries

    def release(self) -> None:
        """Remove the lock if it is still this driver's."""
        self._stop.set()
        try:
            if json.loads(self.path.read_text()) == self.record:
                self.path.unlink()
        except (OSError, ValueError):
            pass


class BucketLock:
    """The claim on a sweep folder in a bucket (study.storage), where no exclusive create
    is available through pyarrow.fs: write the claim object, wait SETTLE_S, read it back;
    the driver whose claim is read back holds the folder (S3 reads after writes are
    strongly consistent). The heartbeat rewrites the object; one untouched for STALE_S
    is stale. Two drivers claiming within the same SETTLE_S can both lose, never both win,
    unless an upload takes longer than SETTLE_S."""

    SETTLE_S = 1.0

    def __init__(self, mirror):
        from study.storage import join
        self.mirror, self.key = mirror, join(mirror.path, FILE)
        self.record = {"host": socket.gethostname(), "pid": os.getpid(), "nonce": os.urandom(8).hex(),
                       "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        self._stop = threading.Event()
        self._mutex = threading.Lock()           # a beat never lands after the release

    def _read(self) -> tuple[dict | None, float]:
        from pyarrow import fs

        from study.storage import get_bytes
        info = self.mirror.fs.get_file_info(self.key)
        if info.type == fs.FileType.NotFound:
            return None, 0.0
        try:
            return json.loads(get_bytes(self.mirror.fs, self.key)), info.mtime.timestamp()
        except (OSError, ValueError):
            return {}, info.mtime.timestamp()

    def _write(self) -> None:
        from study.storage import put_bytes
        put_bytes(self.mirror.fs, self.key, json.dumps(self.record).encode())

    def acquire(self) -> "BucketLock":
        holder, mtime = self._read()
        if holder is not None and time.time() - mtime < STALE_S:
            raise Claimed(f"{self.mirror.uri} is in use by a running sweep ({describe(holder)}); if that "
                          f"sweep is gone, remove {self.mirror.uri}/{FILE} or wait {STALE_S:g} s")
        self._write()
        time.sleep(self.SETTLE_S)
        holder, _ = self._read()
        if holder != self.record:
            raise Claimed(f"{self.mirror.uri}: another driver claimed the sweep folder at the same time "
                          f"({describe(holder or {})})")
        threading.Thread(target=self._heartbeat, daemon=True).start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with self._mutex:
                if self._stop.is_set():
                    return
                try:
                    if self._read()[0] not in (None, self.record):
                        print(f"warning: {self.mirror.uri}: another driver claimed the sweep folder "
                              "(this one's claim had gone stale)", file=sys.stderr)
                        return
                    self._write()
                except OSError:
                    continue                         # a passing network error: the next beat retries

    def release(self) -> None:
        self._stop.set()
        with self._mutex:
            try:
                if self._read()[0] == self.record:
                    self.mirror.fs.delete_file(self.key)
            except OSError:
                pass
