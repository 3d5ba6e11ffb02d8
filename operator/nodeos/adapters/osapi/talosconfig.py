"""Reads a talosconfig and keeps its mTLS credentials current as the file or Secret changes.

A talosconfig is YAML: ``context: <name>`` and ``contexts: {<name>: {endpoints, nodes, ca, crt,
key}}`` with base64 PEM values. ``parse`` turns it into ``Credentials`` or raises
``TalosConfigError`` naming the field at fault; messages never contain key material.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


class TalosConfigError(ValueError):
    """The talosconfig is unusable; the message names the field and the problem."""


@dataclass(frozen=True)
class Credentials:
    """The mTLS material of one talosconfig context (PEM bytes), plus where to connect."""

    context: str
    endpoints: tuple[str, ...]
    nodes: tuple[str, ...]
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    roles: tuple[str, ...] = ()
    not_after: float = 0.0

    @property
    def fingerprint(self) -> str:
        """Identifies this material without revealing it (changes when it is rotated)."""
        digest = hashlib.sha256(self.ca_pem + self.cert_pem + self.key_pem)
        return digest.hexdigest()[:16]


def parse(
    text: str | bytes, context: str | None = None, source: str = "talosconfig"
) -> Credentials:
    """Parses a talosconfig; ``context`` overrides the file's current context."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TalosConfigError(f"{source}: not valid YAML ({_first_line(error)})") from None
    if not isinstance(document, dict):
        raise TalosConfigError(f"{source}: expected a mapping with 'context' and 'contexts'")
    contexts = document.get("contexts")
    if not isinstance(contexts, dict) or not contexts:
        raise TalosConfigError(f"{source}: 'contexts' is missing or empty")
    name = context or document.get("context")
    if not name:
        raise TalosConfigError(f"{source}: no 'context' is set and none was given")
    if name not in contexts:
        known = ", ".join(sorted(map(str, contexts)))
        raise TalosConfigError(f"{source}: context {name!r} not found (have: {known})")
    entry = contexts[name]
    if not isinstance(entry, dict):
        raise TalosConfigError(f"{source}: contexts.{name} must be a mapping")
    where = f"{source}: contexts.{name}"
    ca = _pem(entry, "ca", where)
    cert_pem = _pem(entry, "crt", where)
    key_pem = _pem(entry, "key", where)
    cert = _load_cert(cert_pem, f"{where}.crt")
    _load_cert(ca, f"{where}.ca")
    key = _load_key(key_pem, f"{where}.key")
    if _public_bytes(key.public_key()) != _public_bytes(cert.public_key()):
        raise TalosConfigError(f"{where}.key does not belong to the certificate in {where}.crt")
    endpoints = _strings(entry.get("endpoints", entry.get("target")), f"{where}.endpoints")
    if not endpoints:
        raise TalosConfigError(f"{where}.endpoints: at least one endpoint is required")
    roles = tuple(
        str(attribute.value)
        for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    )
    return Credentials(
        context=str(name),
        endpoints=endpoints,
        nodes=_strings(entry.get("nodes"), f"{where}.nodes"),
        ca_pem=ca,
        cert_pem=cert_pem,
        key_pem=key_pem,
        roles=roles,
        not_after=cert.not_valid_after_utc.timestamp(),
    )


class CredentialSource(Protocol):
    """Somewhere a talosconfig lives; the client asks it for current credentials."""

    description: str

    async def load(self, *, force: bool = False) -> Credentials:
        """Current credentials; ``force`` re-reads even if nothing seems to have changed."""
        ...

    def endpoints(self) -> tuple[str, ...]:
        """The endpoints of the credentials last loaded (the talosconfig may move them)."""
        ...


class FileSource:
    """A talosconfig file, re-read when its modification time or size changes."""

    def __init__(self, path: Path, context: str | None = None) -> None:
        self.path = path
        self.context = context
        self.description = f"file {path}"
        self._stamp: tuple[float, int] | None = None
        self._cached: Credentials | None = None

    async def load(self, *, force: bool = False) -> Credentials:
        """Parses the file again when it changed (or when forced)."""
        try:
            stat = self.path.stat()
        except OSError as error:
            raise TalosConfigError(f"{self.description}: cannot read ({error.strerror})") from None
        stamp = (stat.st_mtime, stat.st_size)
        if force or self._cached is None or stamp != self._stamp:
            self._cached = parse(self.path.read_bytes(), self.context, source=self.description)
            self._stamp = stamp
        return self._cached

    def endpoints(self) -> tuple[str, ...]:
        """The endpoints of the file as last read."""
        return self._cached.endpoints if self._cached is not None else ()


SecretFetcher = Callable[[], Awaitable[tuple[str, bytes]]]


class SecretSource:
    """A talosconfig in a Kubernetes Secret key, fetched through ``fetch``.

    ``fetch`` returns (resourceVersion, value). The Secret is fetched again after
    ``recheck_s`` seconds, when ``invalidate()`` is called (a watch saw it change) or when a
    call failed on credentials.
    """

    def __init__(
        self,
        fetch: SecretFetcher,
        description: str,
        context: str | None = None,
        recheck_s: float = 60.0,
    ) -> None:
        self.description = description
        self._fetch = fetch
        self._context = context
        self._recheck_s = recheck_s
        self._version = ""
        self._checked_at = 0.0
        self._cached: Credentials | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forces the next ``load`` to fetch the Secret."""
        self._checked_at = 0.0

    async def load(self, *, force: bool = False) -> Credentials:
        """Fetches the Secret when due, parsing it only when its resourceVersion moved."""
        async with self._lock:
            due = time.monotonic() - self._checked_at >= self._recheck_s
            if self._cached is not None and not force and not due:
                return self._cached
            version, value = await self._fetch()
            self._checked_at = time.monotonic()
            if self._cached is None or version != self._version:
                self._cached = parse(value, self._context, source=self.description)
                self._version = version
            return self._cached

    def endpoints(self) -> tuple[str, ...]:
        """The endpoints of the Secret as last read."""
        return self._cached.endpoints if self._cached is not None else ()


def _pem(entry: dict[str, Any], key: str, where: str) -> bytes:
    value = entry.get(key)
    if not value or not isinstance(value, str):
        raise TalosConfigError(f"{where}.{key} is missing")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TalosConfigError(f"{where}.{key} is not valid base64") from None
    if b"-----BEGIN" not in decoded:
        raise TalosConfigError(f"{where}.{key} does not decode to PEM")
    return decoded


def _load_cert(data: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise TalosConfigError(f"{where} is not a PEM certificate") from None


def _load_key(
    data: bytes, where: str
) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | (ed25519.Ed25519PrivateKey):
    try:
        key = serialization.load_pem_private_key(_normalise_ed25519_label(data), password=None)
    except (ValueError, TypeError):
        raise TalosConfigError(f"{where} is not an unencrypted PEM private key") from None
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise TalosConfigError(f"{where}: unsupported key type {type(key).__name__}")
    return key


def _normalise_ed25519_label(data: bytes) -> bytes:
    """Talos writes Ed25519 keys with the label 'ED25519 PRIVATE KEY'; the body is PKCS#8."""
    return data.replace(b"ED25519 PRIVATE KEY", b"PRIVATE KEY")


def _public_bytes(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TalosConfigError(f"{where} must be a list of strings")
    return tuple(value)


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
