"""scripts/services.sh: idempotent start, stale pid files, clear errors, and a `down` that leaves
nothing running. Runs private instances (own state folder and ports), never the suite's own."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services.sh"

pytestmark = pytest.mark.slow


def _base_port() -> int:
    """A run of 10 free ports (the script uses base+0 .. base+8) between 10000 and 19999.

    Below the kernel's ephemeral range (32768-60999 here), so that no outgoing connection of a
    test running beside this one can take one of the ports between this check and the start
    (it did once: RabbitMQ's node did not start on a base the kernel had handed out), and below
    the checkouts' own bases (20000-29999, scripts/lib.sh)."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        base = rng.randrange(10000, 19990, 10)
        if all(_free(base + i) for i in range(10)):
            return base
    raise RuntimeError("no run of 10 free ports between 10000 and 19999")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def services(tmp_path: Path):
    state = Path("/var/tmp") / f"dlq-console-test-{os.getpid()}-{time.monotonic_ns()}"
    env = {
        **os.environ,
        "DLQ_STATE_DIR": str(state),
        "DLQ_PORT_BASE": str(_base_port()),
        "DLQ_ENV_FILE": str(tmp_path / "env"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=180)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr + _log_tails(state)
        return result

    run.state = state  # type: ignore[attr-defined]
    run.base = int(env["DLQ_PORT_BASE"])  # type: ignore[attr-defined]
    run.env_file = tmp_path / "env"  # type: ignore[attr-defined]
    yield run
    run("down", check=False)
    subprocess.run(["rm", "-rf", str(state)], check=False)


def _log_tails(state: Path) -> str:
    """The last lines of every log the script wrote, so a failed start explains itself in CI."""
    tails = []
    for log in sorted(state.glob("*/**/*.log")):
        lines = log.read_text(errors="replace").splitlines()[-15:]
        tails.append(f"\n--- {log}\n" + "\n".join(lines))
    return "".join(tails)


def _pid(path: Path) -> int:
    return int(path.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def test_up_is_idempotent_and_down_stops_everything(services) -> None:
    services("up", "redis", "kafka", "rabbitmq")
    pids = {
        name: _pid(services.state / name / f)
        for name, f in [("redis", "redis.pid"), ("kafka", "tansu.pid"), ("rabbitmq", "server.pid")]
    }
    env_text = services.env_file.read_text()
    assert f"REDIS_URL=redis://127.0.0.1:{services.base + 1}/0" in env_text
    assert f"LOCAL_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{services.base + 6}" in env_text

    started = time.monotonic()
    services("up", "redis", "kafka", "rabbitmq")
    assert time.monotonic() - started < 5, "a second up must not restart running services"
    assert pids == {
        name: _pid(services.state / name / f)
        for name, f in [("redis", "redis.pid"), ("kafka", "tansu.pid"), ("rabbitmq", "server.pid")]
    }
    assert services("status", "redis", "kafka", "rabbitmq").returncode == 0

    services("down", "redis", "kafka", "rabbitmq")
    assert not [name for name, pid in pids.items() if _alive(pid)]
    epmd_port = services.base + 5
    assert not _open(epmd_port), "the node's private epmd outlived it"
    assert not _open(4369) or _open_before_test(4369)
    status = services("status", "redis", "kafka", "rabbitmq", check=False)
    assert status.returncode == 1 and status.stdout.count(" down ") == 3


@pytest.mark.fault
def test_a_stale_pid_file_is_replaced(services) -> None:
    services("up", "kafka")
    pid_file = services.state / "kafka" / "tansu.pid"
    old = _pid(pid_file)
    os.kill(old, 9)
    time.sleep(0.3)
    services("up", "kafka")
    new = _pid(pid_file)
    assert new != old and _alive(new)


def test_a_taken_port_gives_a_clear_error(services) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", services.base + 6))
    squatter.listen()
    try:
        result = services("up", "kafka", check=False)
    finally:
        squatter.close()
    assert result.returncode != 0
    assert f"port {services.base + 6} is already taken" in result.stderr


def test_an_unknown_service_is_refused(services) -> None:
    result = services("up", "mongodb", check=False)
    assert result.returncode != 0 and "unknown service 'mongodb'" in result.stderr


def _open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


_EPMD_DEFAULT_AT_IMPORT = _open(4369)


def _open_before_test(port: int) -> bool:
    return port == 4369 and _EPMD_DEFAULT_AT_IMPORT
