import json
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from prefect import flow, task
from prefect.types._datetime import now

from batchscribe.locks import LeaseLockManager, locked_cache_policy


def plant_dead_holder(locks: Path, key: str, lapses_in_s: float) -> Path:
    """A lock as a worker on another host leaves it when its pod is killed: a lease nobody renews."""
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{key}.lock"
    expiration = now("UTC") + timedelta(seconds=lapses_in_s)
    path.write_text(json.dumps({"holder": "run-on-pod-7", "expiration": str(expiration), "host": "pod-7", "pid": 1}))
    return path


def test_a_dead_holder_on_another_host_is_taken_over_once_its_lease_lapses(tmp_path: Path) -> None:
    path = plant_dead_holder(tmp_path, "k", lapses_in_s=1.0)
    manager = LeaseLockManager(tmp_path, lease_s=5, max_wait_s=60)
    assert manager.is_locked("k")  # pid 1 is alive here, but the lock is another host's: only its lease counts
    started = time.monotonic()
    assert manager.acquire_lock("k", "me")
    assert 0.7 < time.monotonic() - started < 5
    record = json.loads(path.read_text())
    assert record["holder"] == "me" and record["host"] == socket.gethostname()
    manager.release_lock("k", "me")
    assert not path.exists() and not list(tmp_path.glob(".*"))  # no breaker or temporary file left


def test_a_holder_that_died_after_storing_its_value_leaves_no_lock_behind(tmp_path: Path) -> None:
    from batchscribe.result_cache import ResultCache

    cache = ResultCache(tmp_path)
    assert cache.get_or_compute("k", lambda: "words") == ("words", False)
    path = plant_dead_holder(tmp_path / "locks", "k", lapses_in_s=0.5)  # killed before its release
    assert cache.get_or_compute("k", lambda: "computed again") == ("words", True)
    assert not path.exists() and not list((tmp_path / "locks").glob(".*"))
    live = plant_dead_holder(tmp_path / "locks", "k2", lapses_in_s=60.0)
    LeaseLockManager(tmp_path / "locks").clear_lapsed("k2")
    assert live.exists()  # a lease that has not lapsed is never cleared


def test_a_live_holder_renews_its_lease_and_is_never_taken_over(tmp_path: Path) -> None:
    holder = LeaseLockManager(tmp_path, lease_s=0.6)
    waiter = LeaseLockManager(tmp_path, lease_s=0.6, max_wait_s=60)
    assert holder.acquire_lock("k", "a")
    first = json.loads((tmp_path / "k.lock").read_text())["expiration"]
    release = threading.Timer(2.0, holder.release_lock, ("k", "a"))  # works for more than three leases
    release.start()
    started = time.monotonic()
    assert waiter.acquire_lock("k", "b")
    assert time.monotonic() - started > 1.8
    assert json.loads((tmp_path / "k.lock").read_text())["holder"] == "b"
    assert first != json.loads((tmp_path / "k.lock").read_text())["expiration"]
    waiter.release_lock("k", "b")


def test_waiting_is_bounded_then_the_waiter_computes_without_the_lock(tmp_path: Path) -> None:
    holder = LeaseLockManager(tmp_path, lease_s=0.6)
    waiter = LeaseLockManager(tmp_path, lease_s=0.6, max_wait_s=0.5)
    assert holder.acquire_lock("k", "a")
    started = time.monotonic()
    assert waiter.acquire_lock("k", "b")
    assert 0.4 < time.monotonic() - started < 3
    assert waiter.is_lock_holder("k", "b") and holder.is_lock_holder("k", "a")  # "b" may write its result
    waiter.release_lock("k", "b")
    assert holder.is_lock_holder("k", "a")  # giving up the wait never removes the live holder's lock
    holder.release_lock("k", "a")
    assert not (tmp_path / "k.lock").exists()


def test_many_takers_of_one_lapsed_lock_hold_it_one_at_a_time(tmp_path: Path) -> None:
    plant_dead_holder(tmp_path, "k", lapses_in_s=0.3)
    inside, most = [0], [0]
    count = threading.Lock()

    def worker(name: str) -> None:
        manager = LeaseLockManager(tmp_path, lease_s=5, max_wait_s=60)
        assert manager.acquire_lock("k", name)
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        with count:
            inside[0] -= 1
        manager.release_lock("k", name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1 and not (tmp_path / "k.lock").exists()


def test_a_cached_task_is_not_blocked_by_a_dead_hosts_lock(prefect_server, tmp_path: Path) -> None:
    calls = []

    @task(persist_result=True, result_storage=tmp_path / "results")
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    policy = locked_cache_policy(lambda context, parameters: f"double-{parameters['x']}", tmp_path, lease_s=1)
    cached = double.with_options(cache_policy=policy)
    plant_dead_holder(tmp_path / "locks", "double-21", lapses_in_s=1.0)

    @flow
    def twice() -> list[int]:
        return [cached(21), cached(21)]

    started = time.monotonic()
    assert twice() == [42, 42]
    assert time.monotonic() - started < 30 and calls == [21]  # the second call hit the first one's result
    assert not list((tmp_path / "locks").glob("*.lock"))
