"""The database side of a pipelined capture pass: writer threads with their own connections.

A pass reads batch N+1 from the broker while batch N's transaction commits. Broker clients
(pika, confluent-kafka) are not thread-safe, so every broker call stays on the pass's thread;
only database work runs on a BatchWriter, one job at a time, in the order submitted, on the
writer's own connection (Django gives each thread its own). A pass uses two: one commits the
batches, one records their removal. The pass removes a batch from the broker only after the job
that committed it has returned (invariant 1); a job that raises hands its exception to whoever
waits for it, and nothing of that batch is removed.

Inside a caller's transaction (a test, or a service run within ``transaction.atomic``) another
connection would not see the caller's uncommitted rows, and could wait forever for its locks:
there the writer runs each job at once on the calling thread instead.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

from django.db import connection, connections

T = TypeVar("T")


class BatchWriter:
    """Runs database jobs for one capture pass, off the pass's thread when it can.

    Use as a context manager: leaving the block waits for the job still running (so no commit
    is left half-seen) and closes the writer thread's database connection.
    """

    def __init__(self) -> None:
        # Only in autocommit, outside any atomic block: see the module docstring.
        self.threaded = connection.get_autocommit() and not connection.in_atomic_block
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-db") if self.threaded else None

    def submit(self, job: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Start ``job``; its result (or exception) comes from the returned future."""
        if self._executor is not None:
            return self._executor.submit(job, *args, **kwargs)
        done: Future[T] = Future()
        try:
            done.set_result(job(*args, **kwargs))
        except BaseException as exc:  # handed to whoever waits, as the thread would
            done.set_exception(exc)
        return done

    def close(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.submit(connections.close_all).result()  # the writer thread's connection only
            executor.shutdown(wait=True)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
