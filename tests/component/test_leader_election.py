"""Leader election's timing rules, with a fake Lease API and clocks the test moves.

Expiry is judged by the standby's own monotonic clock from when it saw the Lease change, so a
holder whose wall clock is hours off neither loses its Lease early nor keeps it after dying;
the holder gives up (``on_lost``) before a standby can take over.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from nodeos.adapters.lease import LeaderElection, LeaseObserver


class FakeLeases:
    """One Lease with resourceVersion semantics; ``down`` makes every request fail."""

    def __init__(self) -> None:
        self.lease: client.V1Lease | None = None
        self.version = 0
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ApiException(status=503, reason="unavailable")

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> client.V1Lease:
        self._check()
        if self.lease is None:
            raise ApiException(status=404, reason="not found")
        return copy.deepcopy(self.lease)

    def create_namespaced_lease(self, namespace: str, body: client.V1Lease, **_: Any) -> None:
        self._check()
        if self.lease is not None:
            raise ApiException(status=409, reason="exists")
        self._store(body)

    def replace_namespaced_lease(
        self, name: str, namespace: str, body: client.V1Lease, **_: Any
    ) -> None:
        self._check()
        if str(body.metadata.resource_version) != str(self.version):
            raise ApiException(status=409, reason="conflict")
        self._store(body)

    def _store(self, body: client.V1Lease) -> None:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease.metadata.resource_version = str(self.version)

    def written_by(self, holder: str, renew_time: datetime.datetime) -> None:
        """Another replica (with its own wall clock) renews."""
        self._store(
            client.V1Lease(
                metadata=client.V1ObjectMeta(name="l", namespace="ns"),
                spec=client.V1LeaseSpec(
                    holder_identity=holder, lease_duration_seconds=15, renew_time=renew_time
                ),
            )
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def election(leases: FakeLeases, identity: str, clock: Clock) -> LeaderElection:
    made = LeaderElection(client.ApiClient(), "ns", "l", identity, clock=clock, sleep=clock.sleep)
    made.coordination = leases  # type: ignore[assignment]
    return made


HOURS_AHEAD = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=3)
HOURS_BEHIND = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=3)


@pytest.mark.parametrize("holder_clock", [HOURS_AHEAD, HOURS_BEHIND])
def test_a_standby_judges_expiry_by_its_own_clock_whatever_the_holders(
    holder_clock: datetime.datetime,
) -> None:
    leases, clock = FakeLeases(), Clock()
    standby = election(leases, "b", clock)
    leases.written_by("a", holder_clock)
    for _ in range(10):  # the holder renews every 2 s: never expired, however old it looks
        assert standby._try_acquire(1.0) is False
        clock.now += 2
        leases.written_by("a", holder_clock)
    assert standby._try_acquire(1.0) is False
    clock.now += 14.9  # the holder stopped renewing: still not 15 s of silence
    assert standby._try_acquire(1.0) is False
    clock.now += 0.2
    assert standby._try_acquire(1.0) is True, "15 s unchanged on the standby's clock"
    assert leases.lease is not None and leases.lease.spec.holder_identity == "b"


def test_an_emptied_lease_is_taken_at_once() -> None:
    leases, clock = FakeLeases(), Clock()
    leases.written_by("a", HOURS_AHEAD)
    assert leases.lease is not None
    leases.lease.spec.holder_identity = None
    assert election(leases, "b", clock)._try_acquire(1.0) is True


def test_the_observer_restarts_its_count_at_each_change() -> None:
    clock = Clock()
    observer = LeaseObserver(clock)
    assert not observer.expired("1", "a", 15)
    clock.now += 14
    assert not observer.expired("2", "a", 15)
    clock.now += 14
    assert not observer.expired("2", "a", 15)
    clock.now += 1
    assert observer.expired("2", "a", 15)


async def test_the_holder_gives_up_before_a_standby_can_take_over() -> None:
    leases, clock = FakeLeases(), Clock()
    leader = election(leases, "a", clock)
    standby = election(leases, "b", clock)
    assert await leader._attempt(4.0)
    assert standby._try_acquire(1.0) is False  # the standby starts watching now
    lost_at: list[float] = []
    leases.down = True  # the leader is cut off from the API server
    await asyncio.wait_for(leader.hold(lambda: lost_at.append(clock.now)), 10)
    leases.down = False
    gave_up = lost_at[0]
    assert gave_up <= 1000.0 + leader.renew_deadline_s + 0.5
    # the standby, cut off from nothing, may take over only once it saw 15 s of silence
    clock.now = 1000.0 + 14.9
    assert standby._try_acquire(1.0) is False
    clock.now = 1000.0 + 15.1
    assert standby._try_acquire(1.0) is True
    assert clock.now - gave_up >= leader.duration_s - leader.renew_deadline_s - 0.5


def test_the_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        LeaderElection(client.ApiClient(), "ns", "l", "a", duration_s=10, renew_deadline_s=10)
