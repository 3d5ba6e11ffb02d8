"""Leader election with a coordination.k8s.io Lease: one active operator, standbys wait.

The timings follow client-go's leader election, and so does the guarantee: two replicas never
act at once, as long as their clocks run at about the same rate (no clock needs to agree with
another host's).

- ``duration_s`` (15 s): a standby takes the Lease over once it has seen the Lease record
  unchanged for this long, measured on its *own* monotonic clock from the moment it saw the
  record change. It never compares the holder's ``renewTime`` with its local wall clock, so a
  skewed clock on either host cannot make a live Lease look expired.
- ``renew_deadline_s`` (10 s): the holder that has not renewed successfully within this long of
  *sending* its last successful renewal gives up: ``on_lost`` runs, which closes the process's
  fence (no further request leaves it) and stops the operator. A renewal in flight is
  abandoned at the deadline. The standby's wait starts no earlier than that renewal reached
  the API server, so the holder stops at least ``duration_s - renew_deadline_s`` (5 s) before
  anyone else can start.
- ``retry_s`` (2 s): how often the holder renews and a standby looks.

``release`` on a clean shutdown empties the holder, so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class LeaseError(RuntimeError):
    """The Lease cannot be used at all (missing namespace, no permission)."""


class LeaseObserver:
    """Judges whether another holder's Lease has expired, by this replica's own clock."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._record: object = None
        self._seen_at = 0.0

    def expired(self, record: object, holder: str | None, duration_s: float) -> bool:
        """``record``: anything that changes with every write (the resourceVersion)."""
        now = self._clock()
        if record != self._record:
            self._record, self._seen_at = record, now
        return not holder or now - self._seen_at >= duration_s


class LeaderElection:
    """Holds one Lease for one identity."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        duration_s: int = 15,
        renew_deadline_s: float = 10.0,
        retry_s: float = 2.0,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not retry_s < renew_deadline_s < duration_s:
            raise ValueError("leader election needs retry < renew deadline < lease duration")
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_s = retry_s
        self._clock = clock
        self._sleep = sleep
        self._observer = LeaseObserver(clock)
        self.renewed_at = 0.0  # monotonic time the last successful write was *sent*

    async def acquire(self) -> None:
        """Returns once this identity holds the Lease."""
        announced = False
        while True:
            try:
                if await self._attempt(self.retry_s * 2):
                    break
            except ApiException as error:
                if error.status is not None and error.status < 500 and error.status != 429:
                    raise
                log.warning("reading the lease failed, retrying: %s", error.reason)
            except (OSError, HTTPError) as error:
                log.warning("reading the lease failed, retrying: %s", error)
            if not announced:
                log.info("waiting for the lease %s/%s", self.namespace, self.name)
                announced = True
            await self._sleep(self.retry_s)
        log.info("holding the lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def hold(self, on_lost: Callable[[], None]) -> None:
        """Renews until cancelled; calls ``on_lost`` once the renew deadline has passed."""
        while True:
            left = self.renewed_at + self.renew_deadline_s - self._clock()
            if left <= 0:
                log.error(
                    "could not renew the lease %s/%s for %.0f s; stopping",
                    self.namespace,
                    self.name,
                    self.renew_deadline_s,
                )
                on_lost()
                return
            await self._sleep(min(self.retry_s, left))
            left = self.renewed_at + self.renew_deadline_s - self._clock()
            if left > 0:
                try:
                    if not await self._attempt(left):
                        log.warning("the lease %s/%s is held by another", self.namespace, self.name)
                except (ApiException, OSError, HTTPError, TimeoutError) as error:
                    log.warning("renewing the lease failed: %s", error)

    def release(self) -> None:
        """Gives the Lease up (on a clean shutdown) so a standby takes over at once."""
        try:
            lease = self.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=5
            )
        except (ApiException, OSError, HTTPError):
            return
        if lease.spec is not None and lease.spec.holder_identity == self.identity:
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            with contextlib.suppress(ApiException, OSError, HTTPError):
                self.coordination.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=5
                )

    async def _attempt(self, budget_s: float) -> bool:
        """One read-and-write, abandoned after ``budget_s`` (it then counts as failed)."""
        sent = self._clock()
        try:
            took = await asyncio.wait_for(
                asyncio.to_thread(self._try_acquire, max(1.0, budget_s)), budget_s
            )
        except TimeoutError:
            log.warning("the lease request took longer than %.1f s; abandoned", budget_s)
            return False
        if took:
            self.renewed_at = sent
        return took

    def _try_acquire(self, timeout_s: float) -> bool:
        now = _micro_time()
        try:
            lease = self.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=timeout_s
            )
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create(now, timeout_s)
        spec = lease.spec or client.V1LeaseSpec()
        lease.spec = spec
        holder = spec.holder_identity
        duration = spec.lease_duration_seconds or self.duration_s
        version = lease.metadata.resource_version if lease.metadata else None
        expired = self._observer.expired(version, holder, duration)
        if holder not in (None, self.identity) and not expired:
            return False
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = self.duration_s
        try:  # guarded by the resourceVersion just read: of two writers, one wins
            self.coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=timeout_s
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def _create(self, now: datetime.datetime, timeout_s: float) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.duration_s,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.coordination.create_namespaced_lease(
                self.namespace, body, _request_timeout=timeout_s
            )
        except ApiException as error:
            if error.status == 409:
                return False
            if error.status == 404:
                raise LeaseError(
                    f"namespace {self.namespace!r} does not exist: create it, or pass "
                    "--namespace with the operator's namespace"
                ) from None
            if error.status == 403:
                raise LeaseError(
                    f"not allowed to create the Lease {self.namespace}/{self.name}: {error.reason}"
                ) from None
            raise
        return True


def _micro_time() -> datetime.datetime:
    """Now, never on a whole second: the client then drops the fraction the API requires."""
    now = datetime.datetime.now(datetime.UTC)
    return now if now.microsecond else now.replace(microsecond=1)
