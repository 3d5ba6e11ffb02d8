"""Leader election with a coordination.k8s.io Lease: one active operator, standbys wait.

``acquire`` blocks until this process holds the Lease (taking it over when the holder stopped
renewing for longer than the lease duration); ``hold`` renews it and calls ``on_lost`` when a
renewal fails for longer than the lease duration, after which the process must stop acting.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)


class LeaseError(RuntimeError):
    """The Lease cannot be used at all (missing namespace, no permission)."""


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
        renew_s: float = 5.0,
    ) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = duration_s
        self.renew_s = renew_s

    async def acquire(self) -> None:
        """Returns once this identity holds the Lease."""
        announced = False
        while not await asyncio.to_thread(self._try_acquire):
            if not announced:
                log.info("waiting for the lease %s/%s", self.namespace, self.name)
                announced = True
            await asyncio.sleep(self.renew_s / 2)
        log.info("holding the lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def hold(self, on_lost: Callable[[], None]) -> None:
        """Renews until cancelled; calls ``on_lost`` if the Lease cannot be kept."""
        last = datetime.datetime.now(datetime.UTC)
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                renewed = await asyncio.to_thread(self._try_acquire)
            except ApiException as error:
                log.warning("renewing the lease failed: %s", error.reason)
                renewed = False
            now = datetime.datetime.now(datetime.UTC)
            if renewed:
                last = now
            elif (now - last).total_seconds() >= self.duration_s:
                log.error("lost the lease %s/%s; stopping", self.namespace, self.name)
                on_lost()
                return

    def release(self) -> None:
        """Gives the Lease up (on a clean shutdown) so a standby takes over at once."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException:
            return
        if lease.spec is not None and lease.spec.holder_identity == self.identity:
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            with contextlib.suppress(ApiException):
                self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)

    def _try_acquire(self) -> bool:
        now = _micro_time()
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise
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
                self.coordination.create_namespaced_lease(self.namespace, body)
            except ApiException as create_error:
                if create_error.status == 409:
                    return False
                if create_error.status == 404:
                    raise LeaseError(
                        f"namespace {self.namespace!r} does not exist: create it, or pass "
                        "--namespace with the operator's namespace"
                    ) from None
                if create_error.status == 403:
                    raise LeaseError(
                        f"not allowed to create the Lease {self.namespace}/{self.name}: "
                        f"{create_error.reason}"
                    ) from None
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        lease.spec = spec
        holder = spec.holder_identity
        renewed = spec.renew_time
        expired = renewed is None or (now - renewed).total_seconds() > (
            spec.lease_duration_seconds or self.duration_s
        )
        if holder not in (None, self.identity) and not expired:
            return False
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = self.duration_s
        try:
            self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True


def _micro_time() -> datetime.datetime:
    """Now, never on a whole second: the client then drops the fraction the API requires."""
    now = datetime.datetime.now(datetime.UTC)
    return now if now.microsecond else now.replace(microsecond=1)
