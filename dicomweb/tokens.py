"""Bearer tokens: verify JWTs (RFC 7519) from our own secret or a hospital's identity provider, and issue our own.

A ``Verifier`` holds the keys, each bound to one algorithm (RFC 8725 §3.1): an HS256 secret (``secret_keys``), an
RS256/ES256 public key in PEM (``public_keys``), or the signing keys of a JWKS document (``jwks_keys``,
``jwks_file_keys``; RFC 7517) as Keycloak, Azure AD and other OIDC servers publish them.
``Verifier.verify(token)`` returns the caller as a ``Principal`` or raises ``TokenError``, whose message is safe to
send back (it never names a key or echoes the token).

The server's own secret lives in ``<data-dir>/jwt-secret`` (mode 0600), created on first use by
``load_or_create_secret``; ``create_token`` signs HS256 tokens with it for ``dicomweb token``.

A study-scoped token carries a ``study`` claim (a StudyInstanceUID): it is good only for reading that one study,
and only such a token, living at most ``MAX_QUERY_TOKEN_TTL_SECONDS``, may travel in a URL (``access_token``, for
``<img>`` tags and OHIF's ``thumbnailDirect``, which cannot send headers); ``auth.py`` enforces both.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .permissions import Role
from .uids import is_valid_uid

Algorithm = Literal["HS256", "RS256", "ES256"]
AsymmetricAlgorithm = Literal["RS256", "ES256"]
ASYMMETRIC_ALGORITHMS: tuple[AsymmetricAlgorithm, ...] = get_args(AsymmetricAlgorithm)
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Clock skew allowed when checking exp, nbf and iat: RFC 7519 §4.1.4 and §4.1.5 allow "some small leeway".
LEEWAY_SECONDS = 60
# Longest token accepted, in bytes; a real one is well under 2 KB even with many roles. Refused before parsing.
MAX_TOKEN_BYTES = 8 * 1024
# Shortest HS256 secret, in bytes: "a key of the same size as the hash output ... or larger MUST be used"
# (RFC 7518 §3.2).
MIN_SECRET_BYTES = 32
# Smallest RSA modulus, in bits: "a key of size 2048 bits or larger MUST be used" (RFC 7518 §3.3).
MIN_RSA_BITS = 2048
# Random bytes in a generated secret (stored url-safe base64, 43 characters).
SECRET_RANDOM_BYTES = 32
SECRET_FILE = "jwt-secret"
DEFAULT_ROLES_CLAIM = "roles"
# Claims every accepted token carries: who issued it (iss), who it names (sub, for the audit trail) and until when
# (exp: no everlasting tokens). RFC 7519 §4.1 leaves them optional; "the application" (we) may require them.
REQUIRED_CLAIMS = ("exp", "iss", "sub")
# The private claim (RFC 7519 §4.3) naming the one study a study-scoped token may read.
STUDY_CLAIM = "study"
# Longest remaining lifetime of a token sent in a URL, in seconds: URLs end up in proxy logs and browser history
# (RFC 6750 §5.3: "issue short-lived bearer tokens"), so a leaked one must expire soon.
MAX_QUERY_TOKEN_TTL_SECONDS = 3600


class TokenError(Exception):
    """The token is refused (malformed, untrusted signer, outside its validity, no known role); the message says
    why, is safe to show the caller, and the caller should answer 401 with ``WWW-Authenticate: Bearer``."""


@dataclass(frozen=True)
class Principal:
    """The verified caller: the token's subject, the known roles it grants, all of its claims, and the one study
    a study-scoped token is limited to (None: not scoped)."""

    subject: str
    roles: frozenset[Role]
    claims: Mapping[str, Any] = field(hash=False)
    study: str | None = None

    def check_query_token(self, now: float | None = None) -> None:
        """Raise ``TokenError`` unless this token may travel in a URL: study-scoped and expiring soon."""
        if self.study is None:
            raise TokenError(
                "only a study-scoped token ('dicomweb token --study') may be sent as a query parameter; "
                "send this one in the Authorization header"
            )
        remaining = float(self.claims["exp"]) - (time.time() if now is None else now)
        if remaining > MAX_QUERY_TOKEN_TTL_SECONDS + LEEWAY_SECONDS:
            raise TokenError(
                f"a token sent as a query parameter must expire within {MAX_QUERY_TOKEN_TTL_SECONDS} seconds"
            )


@dataclass(frozen=True)
class VerificationKey:
    """One trusted key bound to the one algorithm it verifies; ``kid`` names it in a JWKS."""

    algorithm: Algorithm
    key: bytes | PublicKey = field(repr=False)
    kid: str | None = None


@dataclass(frozen=True)
class Verifier:
    """Accepts tokens signed by one of ``keys``, from ``issuer``, for ``audience``, granting roles in ``roles_claim``.

    Build ``keys`` with ``secret_keys``, ``public_keys``, ``jwks_keys`` or ``jwks_file_keys``. With no ``audience``,
    a token that names one is refused: a token meant for another service is not for us (RFC 7519 §4.1.3).
    ``roles_claim`` may be a dotted path into nested claims (Keycloak's ``realm_access.roles``).
    """

    keys: tuple[VerificationKey, ...]
    issuer: str
    audience: str | None = None
    roles_claim: str = DEFAULT_ROLES_CLAIM

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a token verifier needs at least one key")
        if not self.issuer:
            raise ValueError("a token verifier needs the issuer (iss) its tokens come from")

    def verify(self, token: str) -> Principal:
        """The caller a bearer token names, after checking its signature, iss, aud, exp, nbf and roles."""
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"token is longer than {MAX_TOKEN_BYTES} bytes")
        if not token.isascii():
            raise TokenError("token is malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenError("token is malformed") from None
        key = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as exc:
            raise TokenError(_reason(exc)) from None
        subject = claims["sub"]
        if not subject:
            raise TokenError("token has an empty subject (sub)")
        study = claims.get(STUDY_CLAIM)
        if study is not None and not (isinstance(study, str) and is_valid_uid(study)):
            raise TokenError(f"token {STUDY_CLAIM} claim is not a StudyInstanceUID")
        return Principal(subject, self._roles(claims), MappingProxyType(claims), study)

    def _key_for(self, header: Mapping[str, Any]) -> VerificationKey:
        # The algorithm comes from our keys, never from the token: "none" (RFC 7518 §3.6) and any algorithm not
        # configured, such as an HS256 token signed with an RSA public key as its secret, find no key (RFC 8725 §2.1).
        algorithm = header.get("alg")
        candidates = [key for key in self.keys if key.algorithm == algorithm]
        if not candidates:
            raise TokenError("token algorithm is not accepted")
        kid = header.get("kid")
        if kid is not None:
            candidates = [key for key in candidates if key.kid == kid] or [k for k in candidates if k.kid is None]
        if len(candidates) != 1:
            raise TokenError("token signing key is unknown")
        return candidates[0]

    def _roles(self, claims: Mapping[str, Any]) -> frozenset[Role]:
        # Role names the server does not know are ignored (an identity provider grants roles for many applications).
        value = _claim(claims, self.roles_claim)
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list):
            raise TokenError(f"token has no {self.roles_claim} claim listing roles")
        known = {role.value: role for role in Role}
        roles = frozenset(known[name] for name in names if isinstance(name, str) and name in known)
        if not roles:
            raise TokenError("token grants no known role")
        return roles


def secret_keys(secret: str) -> tuple[VerificationKey, ...]:
    """The key for HS256 tokens signed with a shared secret (ours, or one shared with an identity provider)."""
    return (VerificationKey("HS256", _secret_bytes(secret)),)


def public_keys(pem: str | bytes, algorithm: AsymmetricAlgorithm) -> tuple[VerificationKey, ...]:
    """The key for RS256 or ES256 tokens from one PEM public key (``-----BEGIN PUBLIC KEY-----``)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise ValueError("the token public key is not a PEM public key") from None
    return (VerificationKey(algorithm, _checked_public_key(algorithm, key)),)


def jwks_keys(
    jwks: Mapping[str, Any], algorithms: Iterable[AsymmetricAlgorithm] = ASYMMETRIC_ALGORITHMS
) -> tuple[VerificationKey, ...]:
    """The signing keys for the given algorithms in a JWKS document (RFC 7517 §5), each with its ``kid``."""
    allowed = set(algorithms)
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("a JWKS document is an object with a list of keys")
    keys: list[VerificationKey] = []
    for entry in entries:
        # Keys meant for encryption are not signing keys (RFC 7517 §4.2).
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # a key type or algorithm PyJWT does not know (e.g. RSA-OAEP): not a signing key of ours
        algorithm = next((name for name in allowed if name == jwk.algorithm_name), None)
        if algorithm is None:
            continue
        keys.append(VerificationKey(algorithm, _checked_public_key(algorithm, jwk.key), jwk.key_id))
    if not keys:
        raise ValueError(f"the JWKS has no {'/'.join(sorted(allowed))} signing key")
    return tuple(keys)


def jwks_file_keys(
    path: Path, algorithms: Iterable[AsymmetricAlgorithm] = ASYMMETRIC_ALGORITHMS
) -> tuple[VerificationKey, ...]:
    """``jwks_keys`` of a JWKS file (e.g. saved from the identity provider's ``jwks_uri``)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the JWKS file {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"the JWKS file {path} is not a JSON object")
    return jwks_keys(document, algorithms)


def create_token(
    secret: str,
    subject: str,
    roles: Iterable[Role],
    ttl_seconds: int,
    issuer: str,
    audience: str | None = None,
    *,
    study: str | None = None,
) -> str:
    """An HS256 token for ``subject`` with ``roles``, valid for ``ttl_seconds`` from now (``dicomweb token``);
    with ``study``, a study-scoped token that reads only that study and may be sent as a query parameter."""
    role_names = sorted({Role(role).value for role in roles})
    if not subject:
        raise ValueError("a token needs a subject")
    if not role_names:
        raise ValueError("a token needs at least one role")
    if ttl_seconds <= 0:
        raise ValueError("a token's lifetime must be positive")
    if study is not None:
        if not is_valid_uid(study):
            raise ValueError(f"{study[:80]!r} is not a StudyInstanceUID")
        if ttl_seconds > MAX_QUERY_TOKEN_TTL_SECONDS:
            raise ValueError(f"a study-scoped token lives at most {MAX_QUERY_TOKEN_TTL_SECONDS} seconds")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        DEFAULT_ROLES_CLAIM: role_names,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,  # lets the audit trail tell two tokens of one subject apart
    }
    if audience is not None:
        claims["aud"] = audience
    if study is not None:
        claims[STUDY_CLAIM] = study
    return jwt.encode(claims, _secret_bytes(secret), algorithm="HS256")


def load_or_create_secret(data_dir: Path, secret_file: str | Path = "") -> str:
    """The server's HS256 secret from ``secret_file`` (DICOMWEB_JWT_SECRET_FILE: one file that every replica of an
    archive reads) or ``<data-dir>/jwt-secret``, created (random, mode 0600) on first call.

    Safe when several worker processes (or replicas sharing the file) start at once: the file appears complete or
    not at all, and the first process to publish it wins. The secret is never logged.
    """
    path = secret_path(data_dir, secret_file)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(SECRET_RANDOM_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, path)  # unlike rename, never replaces a secret another process published meanwhile
        except FileExistsError:
            pass
    finally:
        temp.unlink()
    return _read_secret(path)


def secret_path(data_dir: Path, secret_file: str | Path = "") -> Path:
    """Where the HS256 secret is: DICOMWEB_JWT_SECRET_FILE if set, else ``<data-dir>/jwt-secret``."""
    return Path(secret_file) if secret_file else data_dir / SECRET_FILE


def _read_secret(path: Path) -> str:
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise PermissionError(f"{path} is readable by other users; make it private with: chmod 600 {path}")
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds a secret shorter than {MIN_SECRET_BYTES} bytes; delete it to make a new one")
    return secret


def _secret_bytes(secret: str) -> bytes:
    data = secret.encode()
    if len(data) < MIN_SECRET_BYTES:
        raise ValueError(f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes long")
    return data


def _checked_public_key(algorithm: AsymmetricAlgorithm, key: object) -> PublicKey:
    """The key if it is a public key fit for the algorithm: RSA of 2048+ bits (RS256), P-256 (ES256, RFC 7518 §3.4)."""
    if algorithm == "RS256" and isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RS256 keys must have at least {MIN_RSA_BITS} bits, this one has {key.key_size}")
        return key
    if algorithm == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"ES256 keys must be on curve P-256, this one is on {key.curve.name}")
        return key
    raise ValueError(f"the key is not a public key for {algorithm}")


def _claim(claims: Mapping[str, Any], name: str) -> object:
    """A claim by name, or by dotted path into nested objects when no claim has the full name."""
    if name in claims:
        return claims[name]
    value: object = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _reason(exc: jwt.PyJWTError) -> str:
    """A message for a refused token that says what is wrong without echoing the token or naming keys."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token has expired"  # RFC 7519 §4.1.4
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token is not valid yet"  # RFC 7519 §4.1.5 (nbf), and an iat in the future
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token issuer (iss) is not accepted"  # RFC 7519 §4.1.1
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token audience (aud) is not accepted"  # RFC 7519 §4.1.3
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim} claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature is invalid"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token algorithm is not accepted"
    if isinstance(exc, jwt.InvalidKeyError):
        return "token signing key is not accepted"
    if isinstance(exc, jwt.DecodeError):
        return "token is malformed"
    return "token is invalid"
