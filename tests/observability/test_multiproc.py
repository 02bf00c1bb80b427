"""Multiprocess metrics stay right when the processes that wrote them are gone: a scrape adds up
every process's files, and compaction folds dead processes' files into one archive per type
without changing a total."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from recovery.observability import multiproc

# These tests fork the test process (dead RQ work horses): an xdist worker's execnet thread can hold
# a lock at the fork and leave the child hanging, so they run in the alone phase (scripts/test.sh).
pytestmark = pytest.mark.forks

REGISTRY = CollectorRegistry()
HITS = Counter("test_multiproc_hits", "Test counter.", ["kind"], registry=REGISTRY)
LATEST = Gauge("test_multiproc_latest", "Test gauge.", multiprocess_mode="mostrecent", registry=REGISTRY)
LIVE = Gauge("test_multiproc_live", "Test live gauge.", multiprocess_mode="livesum", registry=REGISTRY)
SECONDS = Histogram("test_multiproc_seconds", "Test histogram.", buckets=(1, 10), registry=REGISTRY)


def _work(folder: str, hits: int, latest: float) -> None:
    """A short-lived process (an RQ work horse): writes its metrics, then is gone."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    HITS.labels("a").inc(hits)
    LATEST.set(latest)
    LIVE.inc()
    SECONDS.observe(5)


def _run_dead_process(folder: Path, hits: int, latest: float) -> None:
    process = multiprocessing.get_context("fork").Process(target=_work, args=(str(folder), hits, latest))
    process.start()
    process.join(10)
    assert process.exitcode == 0


def _values(folder: Path) -> dict[tuple[str, tuple], float]:
    with multiproc.locked(str(folder), exclusive=False):
        metrics = MultiProcessCollector.merge(multiproc.readable([str(p) for p in folder.glob("*.db")]))
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in metrics for s in m.samples}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


def test_files_are_named_by_host_and_pid(folder: Path) -> None:
    _run_dead_process(folder, 1, 1.0)
    names = sorted(p.name for p in folder.glob("*.db"))
    assert names and all("-" in name.rsplit("_", 1)[1] for name in names)


def test_compaction_keeps_every_total_and_leaves_one_file_per_type(folder: Path) -> None:
    for hits, latest in ((2, 10.0), (3, 20.0), (4, 30.0)):
        _run_dead_process(folder, hits, latest)
    before = _values(folder)
    assert before[("test_multiproc_hits_total", (("kind", "a"),))] == 9
    assert multiproc.compact(str(folder)) == 12  # 3 processes x counter, mostrecent, livesum, histogram
    after = _values(folder)
    assert after[("test_multiproc_hits_total", (("kind", "a"),))] == 9
    assert after[("test_multiproc_latest", ())] == 30.0  # the most recent reading survives
    assert after[("test_multiproc_seconds_count", ())] == 3
    assert after[("test_multiproc_seconds_bucket", (("le", "10.0"),))] == 3
    assert not any(name[0] == "test_multiproc_live" for name in after)  # a dead process's live gauge goes
    assert sorted(p.name for p in folder.glob("*.db")) == [
        "counter_archive.db", "gauge_mostrecent_archive.db", "histogram_archive.db"
    ]  # fmt: skip


def test_compaction_adds_to_an_existing_archive(folder: Path) -> None:
    _run_dead_process(folder, 5, 1.0)
    multiproc.compact(str(folder))
    _run_dead_process(folder, 6, 2.0)
    multiproc.compact(str(folder))
    assert _values(folder)[("test_multiproc_hits_total", (("kind", "a"),))] == 11


def test_a_live_process_is_left_alone(folder: Path) -> None:
    live = folder / f"counter_{multiproc.process_identifier()}.db"
    live.write_bytes(b"")
    other_host = folder / "counter_otherhost-1.db"
    other_host.write_bytes(b"")
    assert multiproc.compact(str(folder)) == 0
    assert live.exists() and other_host.exists()


def test_a_file_a_process_died_creating_is_dropped_and_never_breaks_a_read(folder: Path) -> None:
    _run_dead_process(folder, 2, 1.0)
    process = multiprocessing.get_context("fork").Process(target=os.getpid)
    process.start()
    process.join(10)
    half_made = folder / f"histogram_{multiproc.process_identifier().rsplit('-', 1)[0]}-{process.pid}.db"
    half_made.write_bytes(b"")  # a dead process's file, created and never sized
    being_made = folder / f"counter_{multiproc.process_identifier()}.db"
    being_made.write_bytes(b"")  # a live process between creating its file and sizing it
    assert multiproc.readable([str(half_made), str(being_made)]) == []
    multiproc.compact(str(folder))
    assert not half_made.exists() and being_made.exists()
    assert _values(folder)[("test_multiproc_hits_total", (("kind", "a"),))] == 2
