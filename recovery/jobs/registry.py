"""The one registry of background jobs: a name, the function, the queue it runs on.

Jobs are enqueued by name and a worker looks the name up here; a name that is not registered
(a function path someone put into Redis, a typo) is refused, never imported. The registry is
filled when the app is ready (``recovery.apps``), by importing ``recovery.jobs.definitions``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import models

from recovery.errors import RecoveryError
from recovery.observability.jobs import observed_job

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class JobQueue(models.TextChoices):
    """The queues, each served by its own workers so that one kind of work never waits behind
    another: a replay run's workers are not queued behind a hundred capture passes."""

    REPLAY = "replay", "Replay workers"
    CAPTURE = "capture", "Capture passes and their classification"
    PERIODIC = "periodic", "Periodic jobs (scheduler tick, watchdogs, heartbeats)"
    BULK = "bulk", "Bulk work (triage, re-classification, audit verification, drill runs)"


class UnknownJob(RecoveryError):
    """A job name that is not in the registry: refused, and logged by the worker that got it."""


@dataclass(frozen=True)
class RegisteredJob:
    name: str
    func: Callable[..., Any]
    queue: JobQueue


_JOBS: dict[str, RegisteredJob] = {}


def job(*, queue: JobQueue) -> Callable[[F], F]:
    """Register the decorated function as a job under its own name, to run on ``queue``.
    It is also an ``observed_job``: a span, its ids in the log context, its outcome in metrics."""

    def register(func: F) -> F:
        name = func.__name__
        if name in _JOBS:
            raise ValueError(f"job {name!r} is registered twice")
        observed = observed_job(func)
        _JOBS[name] = RegisteredJob(name=name, func=observed, queue=JobQueue(queue))
        return observed

    return register


def registered(name: Any) -> RegisteredJob:
    """The job registered as ``name``; ``UnknownJob`` for anything else."""
    found = _JOBS.get(name) if isinstance(name, str) else None
    if found is None:
        raise UnknownJob(f"refusing job {str(name)[:200]!r}: not a registered job")
    return found


def job_names() -> list[str]:
    return sorted(_JOBS)


def received(name: Any) -> RegisteredJob:
    """The job a worker received by name (it came through Redis): refused and logged when it is
    not registered, never imported."""
    try:
        return registered(name)
    except UnknownJob as exc:
        log.error("%s", exc)
        raise


def run_received(name: Any, args: Any) -> Any:
    """Run a job a worker received: a registered name with a list of arguments, or nothing."""
    found = received(name)
    if not isinstance(args, list | tuple):
        log.error("refusing job %r: its arguments are not a list", name)
        raise UnknownJob(f"refusing job {name!r}: its arguments are not a list")
    return found.func(*args)
