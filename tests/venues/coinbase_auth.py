"""Coinbase Advanced Trade request authentication, checked the way the exchange checks it.

A CDP API key is a name (``organizations/<org>/apiKeys/<id>``) and an EC P-256 private key. Each
REST request carries ``Authorization: Bearer <JWT>`` signed ES256 over
``base64url(header).base64url(payload)`` (signature = raw ``r || s``, 64 bytes); the header names
the key (``kid``) and a random ``nonce``; the payload says who (``sub``), when (``nbf``/``exp``,
at most 120 s apart) and, for REST, what (``uri`` = ``"METHOD host/path"``). The websocket
``user`` channel carries the same JWT without ``uri`` in its subscribe message.

The server holds only PUBLIC keys. Tests generate a key pair at run time (``new_test_key``):
no key is ever committed. A rebased ccxt signs ``uri`` with the local address (it strips only
``https://``), so the host part is not compared; the method and the path are.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_LIFETIME_S = 120  # exp - nbf the exchange accepts
LEEWAY_S = 5  # clock tolerance on nbf


class AuthError(Exception):
    """A refused token; ``expired`` tells a time error from a bad key/signature."""

    def __init__(self, reason: str, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.expired = reason, expired


def new_test_key(org: str = "test-org") -> tuple[str, str, ec.EllipticCurvePublicKey]:
    """A made-up CDP key: (api key name, EC private key PEM, public key). Run time only."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    name = f"organizations/{org}/apiKeys/{uuid.uuid4()}"
    return name, pem, private.public_key()


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _uri_parts(uri: str) -> tuple[str, str]:
    """``"GET api.coinbase.com/api/v3/x"`` (or with a scheme, as a rebased ccxt sends) →
    (method, path)."""
    method, _, target = uri.partition(" ")
    if "://" in target:
        target = target.split("://", 1)[1]
    slash = target.find("/")
    return method, (target[slash:] if slash >= 0 else "/")


@dataclass
class JwtVerifier:
    """Known keys (name → public key) and the server's clock skew (the ``timestamp`` fault)."""

    keys: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    skew_s: float = 0.0

    def add_key(self, name: str, public_key: ec.EllipticCurvePublicKey) -> None:
        self.keys[name] = public_key

    def now(self) -> float:
        return time.time() + self.skew_s

    def verify(self, token: str, method: str = "", path: str = "") -> dict:
        """The token's claims, or ``AuthError``. ``method``/``path`` empty: no ``uri`` needed
        (the websocket subscribe)."""
        claims = self._check_signature(token)
        self._check_time(claims)
        if method:
            uri = claims.get("uri")
            if not isinstance(uri, str):
                raise AuthError("missing uri")
            if _uri_parts(uri) != (method.upper(), path):
                raise AuthError(f"uri mismatch: {uri!r}")
        return claims

    def _check_signature(self, token: str) -> dict:
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError("malformed token")
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            raise AuthError("malformed token") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise AuthError("malformed token")
        if header.get("alg") != "ES256":
            raise AuthError("unsupported alg")
        key = self.keys.get(str(header.get("kid")))
        if key is None or claims.get("sub") != header.get("kid"):
            raise AuthError("unknown api key")
        if not header.get("nonce"):
            raise AuthError("missing nonce")
        if claims.get("iss") not in ("cdp", "coinbase-cloud"):
            raise AuthError("invalid issuer")
        if len(signature) != 64:
            raise AuthError("invalid signature")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        signing_input = (parts[0] + "." + parts[1]).encode()
        try:
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise AuthError("invalid signature") from None
        return claims

    def _check_time(self, claims: dict) -> None:
        nbf, exp = claims.get("nbf"), claims.get("exp")
        if not isinstance(nbf, int | float) or not isinstance(exp, int | float):
            raise AuthError("missing nbf/exp")
        if exp - nbf > MAX_LIFETIME_S:
            raise AuthError("token lifetime too long")
        now = self.now()
        if now >= exp or now + LEEWAY_S < nbf:
            raise AuthError("request timestamp expired", expired=True)
