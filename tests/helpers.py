"""Helpers for tests that need a process or port of their own."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import django_rq
from django.conf import settings
from django.db import connection
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.serializers import JSONSerializer

from recovery.jobs.rq_worker import RegisteredJob, RegisteredJobSimpleWorker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@contextmanager
def private_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """A throwaway real redis-server on its own port, for tests that kill it."""
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: _answers(port)), "private redis did not start"
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def run_queued_jobs(*queues: str) -> None:
    """Run every job waiting on these queues in this process, as a burst worker of the project's
    kind would (registered job names only, JSON data)."""
    django_rq.get_worker(*queues, worker_class=RegisteredJobSimpleWorker).work(burst=True)


class JobRunner(threading.Thread):
    """Performs the console's background jobs as an RQ worker would: takes each job off the real
    queues (all of them, in priority order) and runs it. An RQ worker cannot run here: it
    installs signal handlers, which only the main thread may do, and the main thread drives the
    browser while the run progresses (pause and resume must happen during the run, and resume
    must enqueue a fresh worker job, so the test takes the jobs the console enqueued rather than
    calling the engine itself)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.queues: list[Queue] = [django_rq.get_queue(name) for name in settings.RECOVERY_JOB_QUEUES]
        self.stopping = threading.Event()
        self.busy = threading.Event()
        self.performed: list[str] = []
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    job, _queue = Queue.dequeue_any(
                        self.queues,
                        timeout=1,
                        connection=self.queues[0].connection,
                        job_class=RegisteredJob,
                        serializer=JSONSerializer,
                    )
                except DequeueTimeout:
                    continue
                self.busy.set()
                try:
                    job.perform()
                    self.performed.append(f"{job.func_name}{tuple(job.args)}")
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(exc)
                finally:
                    self.busy.clear()
        finally:
            connection.close()  # a thread's own database connection; the test database is dropped later

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
        assert not self.is_alive(), "the job runner did not stop"
