"""prometheus-client's multiprocess mode, kept correct and small across many short-lived processes.

Every web and worker process writes its metrics to its own mmap files in PROMETHEUS_MULTIPROC_DIR;
a scrape adds them up. Two things the library leaves to its user:

- **Names that never collide.** Files are named by a process identifier. A bare pid is only unique
  within one pid namespace; containers sharing the folder (web and workers on one volume) would
  write into each other's files. The identifier here is ``<host>-<pid>``.
- **Dead processes.** RQ forks a work horse per job, gunicorn and Celery replace workers: each
  leaves files behind, and a scrape reads every file. ``compact`` folds the files of this host's
  dead processes into one archive file per metric type (counters and histograms summed, gauges by
  their mode) and deletes them, so totals survive and the folder stays small. Files of 'live'
  gauges of dead processes are deleted (what ``mark_process_dead`` does).

A scrape reads under a shared lock and compaction runs under an exclusive one: a scrape never sees
a dead process's values both in its file and in the archive (invariant: counters never jump).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger(__name__)
ARCHIVE = "archive"
HEADER = 8  # bytes: a file shorter than this is being created (or its process died creating it)
LOCK_FILE = ".compact.lock"
STAMP_FILE = ".compact.stamp"
_HOST = socket.gethostname().replace("_", "-")[:64] or "host"
_MERGE = {
    "counter": "sum",
    "histogram": "sum",
    "summary": "sum",
    "gauge_sum": "sum",
    "gauge_max": "max",
    "gauge_min": "min",
    "gauge_mostrecent": "mostrecent",
}


def directory() -> str | None:
    """The multiprocess folder when multiprocess mode is on, else None."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def process_identifier() -> str:
    """This process's file suffix: unique across processes sharing the folder, even from
    different pid namespaces (prometheus-client calls it on every update to notice a fork)."""
    return f"{_HOST}-{os.getpid()}"


if directory():
    # Installed on import, before any metric exists, whether or not the folder was named before
    # prometheus_client was first imported (it decides at its own import).
    values.ValueClass = values.MultiProcessValue(process_identifier=process_identifier)


@contextlib.contextmanager
def locked(path: str, *, exclusive: bool) -> Iterator[None]:
    with open(os.path.join(path, LOCK_FILE), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _split(filename: str) -> tuple[str, str] | None:
    """(prefix, identifier) of a metrics file: ('counter', 'web-1-42'), ('gauge_max', 'archive')."""
    stem = os.path.basename(filename)[: -len(".db")]
    prefix, _, ident = stem.rpartition("_")
    return (prefix, ident) if prefix and ident else None


def _dead_here(ident: str) -> bool:
    """True when ``ident`` names a process of this host that no longer runs. A bare pid (a file
    written without our identifier) counts as this host's."""
    host, _, pid = ident.rpartition("-")
    if host not in ("", _HOST) or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def readable(files: list[str]) -> list[str]:
    """The files that hold values: not those still being created (shorter than their header),
    nor those deleted since they were listed."""
    found = []
    for filename in files:
        try:
            if os.path.getsize(filename) >= HEADER:
                found.append(filename)
        except FileNotFoundError:
            continue
    return found


def _values(filename: str) -> list[tuple[str, float, float]]:
    """A dead process's values; [] for a file it did not finish creating or left damaged."""
    try:
        return [(k, v, ts) for k, v, ts, _ in MmapedDict.read_all_values_from_file(filename)]
    except (struct.error, RuntimeError, UnicodeDecodeError, ValueError):
        log.warning("metrics file %s is incomplete or damaged: dropped", os.path.basename(filename))
        return []


def _merge(rule: str, files: list[str]) -> dict[str, tuple[float, float]]:
    merged: dict[str, tuple[float, float]] = {}
    for filename in files:
        for key, value, timestamp in _values(filename):
            if key not in merged:
                merged[key] = (value, timestamp)
                continue
            old, old_ts = merged[key]
            if rule == "sum":
                merged[key] = (old + value, 0.0)
            elif rule == "max":
                merged[key] = (max(old, value), 0.0)
            elif rule == "min":
                merged[key] = (min(old, value), 0.0)
            elif timestamp > old_ts:  # mostrecent
                merged[key] = (value, timestamp)
    return merged


def _write(filename: str, values: dict[str, tuple[float, float]]) -> None:
    """Write the archive beside itself, then rename it into place (a reader sees old or new)."""
    partial = filename + ".partial"
    with contextlib.suppress(FileNotFoundError):
        os.remove(partial)
    store = MmapedDict(partial)
    try:
        for key, (value, timestamp) in values.items():
            store.write_value(key, value, timestamp)
    finally:
        store.close()
    os.replace(partial, filename)


def compact(path: str | None = None) -> int:
    """Fold the files of this host's dead processes into the archives; returns how many files
    were removed. Safe to call from any process at any time."""
    path = path or directory()
    if not path or not os.path.isdir(path):
        return 0
    removed = 0
    with locked(path, exclusive=True):
        dead: dict[str, list[str]] = {}
        for filename in glob.glob(os.path.join(path, "*.db")):
            parts = _split(filename)
            if parts is None or parts[1] == ARCHIVE or not _dead_here(parts[1]):
                continue
            dead.setdefault(parts[0], []).append(filename)
        for prefix, files in dead.items():
            if prefix.startswith("gauge_live"):
                pass  # a dead process's live gauge is gone, as mark_process_dead has it
            elif prefix in _MERGE:
                archive = os.path.join(path, f"{prefix}_{ARCHIVE}.db")
                sources = [archive, *files] if os.path.exists(archive) else files
                _write(archive, _merge(_MERGE[prefix], sources))
            else:
                continue  # 'all' gauges show one series per process: left as they are
            for filename in files:
                os.remove(filename)
                removed += 1
        Path(path, STAMP_FILE).touch()
    return removed


def compact_now_and_then(every: float = 60.0) -> None:
    """``compact`` at most once per ``every`` seconds across the processes of this folder (a
    worker calls this at each job; a stamp file's age says when the last one ran). Never raises:
    a job must not fail for its metrics."""
    path = directory()
    if not path:
        return
    try:
        if time.time() - os.stat(os.path.join(path, STAMP_FILE)).st_mtime < every:
            return
    except FileNotFoundError:
        pass
    try:
        compact(path)
    except Exception:  # noqa: BLE001 - telemetry never changes an outcome
        log.warning("compacting the metrics files failed", exc_info=True)
