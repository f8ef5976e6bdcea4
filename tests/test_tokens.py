"""Tokens: JWT verification (HS256, RS256, ES256, JWKS), the hostile tokens it refuses, issuing, the secret file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from dicomweb.permissions import Role
from dicomweb.tokens import (
    LEEWAY_SECONDS,
    MAX_QUERY_TOKEN_TTL_SECONDS,
    MAX_TOKEN_BYTES,
    MIN_SECRET_BYTES,
    SECRET_FILE,
    Principal,
    TokenError,
    Verifier,
    create_token,
    jwks_file_keys,
    jwks_keys,
    load_or_create_secret,
    public_keys,
    secret_keys,
)

ISSUER = "https://idp.example.org/realms/hospital"
AUDIENCE = "dicomweb"
SECRET = secrets.token_urlsafe(32)
OTHER_SECRET = secrets.token_urlsafe(32)


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for a DOCTOR named alice, valid five minutes; a value of None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "sub": "alice", "roles": ["DOCTOR"], "iat": now, "exp": now + 300}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS built by hand, for tokens PyJWT refuses to make."""
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hs256() -> Verifier:
    return Verifier(secret_keys(SECRET), ISSUER)


class TestHS256:
    """Tokens signed with a shared secret."""

    def test_valid(self, hs256: Verifier) -> None:
        """A valid token yields its subject, roles and claims."""
        principal = hs256.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
        assert principal.subject == "alice"
        assert principal.roles == frozenset({Role.DOCTOR})
        assert principal.claims["iss"] == ISSUER

    def test_principal_is_frozen(self, hs256: Verifier) -> None:
        """A Principal cannot be changed after verification."""
        principal = hs256.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
        with pytest.raises(AttributeError):
            principal.subject = "mallory"  # type: ignore[misc]
        with pytest.raises(TypeError):
            principal.claims["sub"] = "mallory"  # type: ignore[index]

    def test_signed_with_another_secret(self, hs256: Verifier) -> None:
        """A token signed with another secret is refused."""
        with pytest.raises(TokenError, match="^token signature is invalid$"):
            hs256.verify(jwt.encode(claims(), OTHER_SECRET, algorithm="HS256"))

    def test_tampered_payload(self, hs256: Verifier) -> None:
        """Changing the claims of a signed token breaks its signature."""
        header, _, signature = jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
        payload = b64(json.dumps(claims(roles=["ADMIN"])).encode())
        with pytest.raises(TokenError, match="signature is invalid"):
            hs256.verify(f"{header}.{payload}.{signature}")

    def test_other_hmac_algorithm(self) -> None:
        """HS512 is not configured, so an HS512 token is refused even with the right secret."""
        secret = secrets.token_urlsafe(64)  # long enough for HS512
        with pytest.raises(TokenError, match="algorithm is not accepted"):
            Verifier(secret_keys(secret), ISSUER).verify(jwt.encode(claims(), secret, algorithm="HS512"))

    def test_short_secret_refused(self) -> None:
        """A secret shorter than the hash output is refused (RFC 7518 §3.2)."""
        with pytest.raises(ValueError, match=str(MIN_SECRET_BYTES)):
            secret_keys("x" * (MIN_SECRET_BYTES - 1))

    def test_needs_a_key_and_an_issuer(self) -> None:
        """A verifier without keys or without an issuer cannot be built."""
        with pytest.raises(ValueError, match="key"):
            Verifier((), ISSUER)
        with pytest.raises(ValueError, match="issuer"):
            Verifier(secret_keys(SECRET), "")


class TestValidityWindow:
    """exp and nbf, with LEEWAY_SECONDS of clock skew."""

    def test_expired(self, hs256: Verifier) -> None:
        """A token that expired longer ago than the leeway is refused."""
        token = jwt.encode(claims(exp=int(time.time()) - LEEWAY_SECONDS - 5), SECRET, algorithm="HS256")
        with pytest.raises(TokenError, match="^token has expired$"):
            hs256.verify(token)

    def test_expired_within_leeway(self, hs256: Verifier) -> None:
        """A token that expired within the leeway is still accepted (the issuer's clock may be ahead)."""
        token = jwt.encode(claims(exp=int(time.time()) - LEEWAY_SECONDS // 2), SECRET, algorithm="HS256")
        assert hs256.verify(token).subject == "alice"

    def test_not_yet_valid(self, hs256: Verifier) -> None:
        """A token whose nbf is further ahead than the leeway is refused."""
        token = jwt.encode(claims(nbf=int(time.time()) + LEEWAY_SECONDS + 5), SECRET, algorithm="HS256")
        with pytest.raises(TokenError, match="^token is not valid yet$"):
            hs256.verify(token)

    def test_not_yet_valid_within_leeway(self, hs256: Verifier) -> None:
        """A token whose nbf is ahead by less than the leeway is accepted."""
        token = jwt.encode(claims(nbf=int(time.time()) + LEEWAY_SECONDS // 2), SECRET, algorithm="HS256")
        assert hs256.verify(token).subject == "alice"

    @pytest.mark.parametrize("claim", ["exp", "sub", "iss"])
    def test_required_claim_missing(self, hs256: Verifier, claim: str) -> None:
        """Tokens without exp (everlasting), sub (anonymous) or iss are refused."""
        with pytest.raises(TokenError, match=f"lacks the {claim} claim"):
            hs256.verify(jwt.encode(claims(**{claim: None}), SECRET, algorithm="HS256"))

    def test_empty_subject(self, hs256: Verifier) -> None:
        """An empty sub names nobody the audit trail could record."""
        with pytest.raises(TokenError, match="subject"):
            hs256.verify(jwt.encode(claims(sub=""), SECRET, algorithm="HS256"))


class TestIssuerAndAudience:
    """iss always, aud when configured (RFC 7519 §4.1.1, §4.1.3)."""

    def test_wrong_issuer(self, hs256: Verifier) -> None:
        """A token from another issuer is refused."""
        with pytest.raises(TokenError, match="issuer"):
            hs256.verify(jwt.encode(claims(iss="https://evil.example"), SECRET, algorithm="HS256"))

    def test_audience_matches(self) -> None:
        """With an audience configured, a token for it (alone or among others) is accepted."""
        verifier = Verifier(secret_keys(SECRET), ISSUER, AUDIENCE)
        assert verifier.verify(jwt.encode(claims(aud=AUDIENCE), SECRET, algorithm="HS256")).subject == "alice"
        assert verifier.verify(jwt.encode(claims(aud=["ris", AUDIENCE]), SECRET, algorithm="HS256"))

    @pytest.mark.parametrize("aud", ["ris", ["ris", "lab"]])
    def test_wrong_audience(self, aud: object) -> None:
        """A token meant for another service is refused."""
        verifier = Verifier(secret_keys(SECRET), ISSUER, AUDIENCE)
        with pytest.raises(TokenError, match="audience"):
            verifier.verify(jwt.encode(claims(aud=aud), SECRET, algorithm="HS256"))

    def test_audience_missing(self) -> None:
        """With an audience configured, a token naming none is refused."""
        verifier = Verifier(secret_keys(SECRET), ISSUER, AUDIENCE)
        with pytest.raises(TokenError, match="lacks the aud claim"):
            verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))

    def test_audience_in_token_but_none_configured(self, hs256: Verifier) -> None:
        """Without a configured audience, a token addressed to some service is not taken as ours."""
        with pytest.raises(TokenError, match="audience"):
            hs256.verify(jwt.encode(claims(aud="ris"), SECRET, algorithm="HS256"))


class TestRoles:
    """The roles claim: configurable, dotted paths, unknown names ignored."""

    def test_unknown_roles_ignored(self, hs256: Verifier) -> None:
        """Role names the server does not know are dropped; the known ones are kept."""
        token = jwt.encode(claims(roles=["offline_access", "RADIOLOGIST", "admin"]), SECRET, algorithm="HS256")
        assert hs256.verify(token).roles == frozenset({Role.RADIOLOGIST})

    @pytest.mark.parametrize("roles", [["SUPERUSER"], [], [1, None, {"ADMIN": True}]])
    def test_only_unknown_roles(self, hs256: Verifier, roles: list[object]) -> None:
        """A token listing no known role is refused."""
        with pytest.raises(TokenError, match="^token grants no known role$"):
            hs256.verify(jwt.encode(claims(roles=roles), SECRET, algorithm="HS256"))

    @pytest.mark.parametrize("roles", [None, 7, {"ADMIN": True}])
    def test_roles_claim_missing_or_not_a_list(self, hs256: Verifier, roles: object) -> None:
        """A token without a list of roles in the configured claim is refused, naming the claim."""
        with pytest.raises(TokenError, match="no roles claim"):
            hs256.verify(jwt.encode(claims(roles=roles), SECRET, algorithm="HS256"))

    def test_single_role_as_string(self, hs256: Verifier) -> None:
        """A claim holding one role name as a string grants that role."""
        assert hs256.verify(jwt.encode(claims(roles="ADMIN"), SECRET, algorithm="HS256")).roles == {Role.ADMIN}

    def test_dotted_claim(self) -> None:
        """A dotted claim name reads nested objects, as Keycloak's realm_access.roles."""
        verifier = Verifier(secret_keys(SECRET), ISSUER, roles_claim="realm_access.roles")
        payload = claims(roles=None, realm_access={"roles": ["RADIOLOGY_TECH", "uma_authorization"]})
        assert verifier.verify(jwt.encode(payload, SECRET, algorithm="HS256")).roles == {Role.RADIOLOGY_TECH}

    def test_dotted_claim_missing(self) -> None:
        """A dotted path that leads nowhere is a missing claim."""
        verifier = Verifier(secret_keys(SECRET), ISSUER, roles_claim="realm_access.roles")
        with pytest.raises(TokenError, match="realm_access.roles"):
            verifier.verify(jwt.encode(claims(realm_access=["ADMIN"]), SECRET, algorithm="HS256"))

    def test_claim_name_with_dots(self) -> None:
        """A claim whose own name has dots (a namespaced claim, as Auth0's) is read whole."""
        name = "https://pacs.example.org/roles"
        verifier = Verifier(secret_keys(SECRET), ISSUER, roles_claim=name)
        token = jwt.encode(claims(roles=None, **{name: ["DOCTOR"]}), SECRET, algorithm="HS256")
        assert verifier.verify(token).roles == {Role.DOCTOR}


class TestHostileTokens:
    """Tokens crafted to get past the checks."""

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    def test_alg_none(self, hs256: Verifier, alg: str) -> None:
        """An unsecured token (alg none) is refused (RFC 7518 §3.6)."""
        with pytest.raises(TokenError, match="algorithm is not accepted"):
            hs256.verify(forge({"alg": alg, "typ": "JWT"}, claims()))

    def test_alg_missing(self, hs256: Verifier) -> None:
        """A token whose header names no algorithm is refused."""
        with pytest.raises(TokenError, match="algorithm is not accepted"):
            hs256.verify(forge({"typ": "JWT"}, claims(), b"x" * 32))

    def test_hs256_signed_with_the_public_key(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """Algorithm confusion: an HS256 token keyed with the RS256 verifier's public PEM is refused."""
        verifier = Verifier(public_keys(pem(rsa_key), "RS256"), ISSUER)
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64(json.dumps(claims()).encode())
        signature = hmac.new(pem(rsa_key), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(TokenError, match="algorithm is not accepted"):
            verifier.verify(f"{header}.{payload}.{b64(signature)}")

    def test_oversized(self, hs256: Verifier) -> None:
        """A token over MAX_TOKEN_BYTES is refused before it is parsed, even if validly signed."""
        token = jwt.encode(claims(padding="x" * MAX_TOKEN_BYTES), SECRET, algorithm="HS256")
        with pytest.raises(TokenError, match=f"longer than {MAX_TOKEN_BYTES} bytes"):
            hs256.verify(token)

    @pytest.mark.parametrize(
        "token",
        [
            "",
            "not-a-token",
            "a.b",
            "a.b.c",
            "....",
            "e30.e30.",  # {} header: no alg
            b64(b"[1, 2]") + ".e30.",
            b64(b'{"alg": "HS256"') + ".e30.",
            "eyJhbGciOiJIUzI1NiJ9.!!!!.c2ln",
            "eyJhbGciOiJIUzI1NiJ9.ümlaut.c2ln",
        ],
    )
    def test_malformed(self, hs256: Verifier, token: str) -> None:
        """Garbage is refused with a TokenError, never another exception."""
        with pytest.raises(TokenError):
            hs256.verify(token)

    def test_payload_not_an_object(self, hs256: Verifier) -> None:
        """A correctly signed token whose payload is not a JSON object is malformed."""
        header = b64(json.dumps({"alg": "HS256"}).encode())
        payload = b64(b'["ADMIN"]')
        signature = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(TokenError, match="^token is malformed$"):
            hs256.verify(f"{header}.{payload}.{b64(signature)}")

    def test_message_does_not_echo_the_token(self, hs256: Verifier) -> None:
        """The refusal message is fixed text, free of the token and the secret."""
        token = jwt.encode(claims(sub="<script>"), OTHER_SECRET, algorithm="HS256")
        with pytest.raises(TokenError) as caught:
            hs256.verify(token)
        assert "<script>" not in str(caught.value) and SECRET not in str(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


class TestPublicKeys:
    """RS256 and ES256 tokens verified with a PEM public key."""

    def test_rs256(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """An RS256 token verifies with the signer's public key."""
        verifier = Verifier(public_keys(pem(rsa_key), "RS256"), ISSUER)
        token = jwt.encode(claims(roles=["ADMIN"]), rsa_key, algorithm="RS256")
        assert verifier.verify(token).roles == {Role.ADMIN}

    def test_rs256_pem_as_text(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """The PEM may be given as text, as read from a setting."""
        verifier = Verifier(public_keys(pem(rsa_key).decode(), "RS256"), ISSUER)
        assert verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256")).subject == "alice"

    def test_es256(self, ec_key: ec.EllipticCurvePrivateKey) -> None:
        """An ES256 token verifies with the signer's P-256 public key."""
        verifier = Verifier(public_keys(pem(ec_key), "ES256"), ISSUER)
        assert verifier.verify(jwt.encode(claims(), ec_key, algorithm="ES256")).subject == "alice"

    def test_signed_with_another_key(self, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
        """An RS256 token signed by another key pair is refused."""
        verifier = Verifier(public_keys(pem(rsa_key), "RS256"), ISSUER)
        with pytest.raises(TokenError, match="signature is invalid"):
            verifier.verify(jwt.encode(claims(), other_rsa_key, algorithm="RS256"))

    def test_other_asymmetric_algorithm(self, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
        """An RS256 verifier refuses ES256 and PS256 tokens."""
        verifier = Verifier(public_keys(pem(rsa_key), "RS256"), ISSUER)
        for token in (
            jwt.encode(claims(), ec_key, algorithm="ES256"),
            jwt.encode(claims(), rsa_key, algorithm="PS256"),
        ):
            with pytest.raises(TokenError, match="algorithm is not accepted"):
                verifier.verify(token)

    def test_key_must_fit_algorithm(self, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
        """An EC key cannot verify RS256, nor an RSA key ES256."""
        with pytest.raises(ValueError, match="RS256"):
            public_keys(pem(ec_key), "RS256")
        with pytest.raises(ValueError, match="ES256"):
            public_keys(pem(rsa_key), "ES256")

    def test_weak_keys_refused(self) -> None:
        """RSA under 2048 bits (RFC 7518 §3.3) and EC off P-256 (§3.4) are refused."""
        with pytest.raises(ValueError, match="2048"):
            public_keys(pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "RS256")
        with pytest.raises(ValueError, match="P-256"):
            public_keys(pem(ec.generate_private_key(ec.SECP384R1())), "ES256")

    def test_not_a_public_key(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """A private key or garbage where the public key belongs is refused."""
        private = rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for data in (private, b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"):
            with pytest.raises(ValueError, match="not a PEM public key"):
                public_keys(data, "RS256")


class TestJWKS:
    """Keys from a JWKS document or file (an identity provider's jwks_uri)."""

    @pytest.fixture
    def document(
        self, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey, other_rsa_key: rsa.RSAPrivateKey
    ) -> dict[str, Any]:
        rs = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True) | {"kid": "rsa-1", "use": "sig", "alg": "RS256"}
        es = ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True) | {"kid": "ec-1"}
        # Keycloak also publishes an encryption key; and a symmetric key here must never verify anything.
        enc = RSAAlgorithm.to_jwk(other_rsa_key.public_key(), as_dict=True) | {"kid": "enc-1", "use": "enc"}
        oct_key = {"kty": "oct", "k": b64(SECRET.encode()), "kid": "oct-1"}
        return {"keys": [rs, es, enc, oct_key, {"kty": "unknown", "kid": "x"}, "junk"]}

    def test_file(self, tmp_path: Path, document: dict[str, Any], rsa_key: rsa.RSAPrivateKey) -> None:
        """A JWKS file's signing keys verify tokens that name them by kid."""
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps(document))
        verifier = Verifier(jwks_file_keys(path), ISSUER)
        token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        assert verifier.verify(token).subject == "alice"

    def test_only_signing_keys_loaded(self, document: dict[str, Any]) -> None:
        """Encryption, symmetric and unknown keys are left out."""
        assert [(key.kid, key.algorithm) for key in jwks_keys(document)] == [("rsa-1", "RS256"), ("ec-1", "ES256")]

    def test_es256_by_kid(self, document: dict[str, Any], ec_key: ec.EllipticCurvePrivateKey) -> None:
        """The EC key of the set verifies ES256 tokens."""
        verifier = Verifier(jwks_keys(document), ISSUER)
        token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
        assert verifier.verify(token).subject == "alice"

    def test_unknown_kid(self, document: dict[str, Any], rsa_key: rsa.RSAPrivateKey) -> None:
        """A kid the set does not have is refused."""
        verifier = Verifier(jwks_keys(document), ISSUER)
        token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-2"})
        with pytest.raises(TokenError, match="signing key is unknown"):
            verifier.verify(token)

    def test_kid_of_another_key(self, document: dict[str, Any], other_rsa_key: rsa.RSAPrivateKey) -> None:
        """A token signed by another key but naming a trusted kid fails its signature check."""
        verifier = Verifier(jwks_keys(document), ISSUER)
        token = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
        with pytest.raises(TokenError, match="signature is invalid"):
            verifier.verify(token)

    def test_encryption_key_does_not_verify(self, document: dict[str, Any], other_rsa_key: rsa.RSAPrivateKey) -> None:
        """A token naming the set's encryption key is refused."""
        verifier = Verifier(jwks_keys(document), ISSUER)
        token = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": "enc-1"})
        with pytest.raises(TokenError, match="signing key is unknown"):
            verifier.verify(token)

    def test_hs256_with_the_symmetric_key_refused(self, document: dict[str, Any]) -> None:
        """The set's symmetric key is not trusted: an HS256 token naming it is refused."""
        verifier = Verifier(jwks_keys(document), ISSUER)
        token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "oct-1"})
        with pytest.raises(TokenError, match="algorithm is not accepted"):
            verifier.verify(token)

    def test_no_kid_with_several_keys(self, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
        """Without a kid, a token cannot pick one of several RS256 keys."""
        keys = [
            RSAAlgorithm.to_jwk(k.public_key(), as_dict=True) | {"kid": f"k{i}"}
            for i, k in enumerate([rsa_key, other_rsa_key])
        ]
        verifier = Verifier(jwks_keys({"keys": keys}), ISSUER)
        with pytest.raises(TokenError, match="signing key is unknown"):
            verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256"))

    def test_algorithms_restrict_the_set(self, document: dict[str, Any]) -> None:
        """Only keys for the configured algorithms are loaded."""
        assert [key.kid for key in jwks_keys(document, ["ES256"])] == ["ec-1"]

    @pytest.mark.parametrize("document", [{}, {"keys": []}, {"keys": "x"}, {"keys": [{"kty": "oct", "k": "AAAA"}]}])
    def test_no_usable_key(self, document: dict[str, Any]) -> None:
        """A set without an RS256/ES256 signing key is a configuration error."""
        with pytest.raises(ValueError, match="JWKS"):
            jwks_keys(document)

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing or non-JSON file is a configuration error naming the file."""
        (tmp_path / "bad.json").write_text("{not json")
        for name in ("missing.json", "bad.json"):
            with pytest.raises(ValueError, match=name):
                jwks_file_keys(tmp_path / name)

    def test_private_key_in_set_refused(self, rsa_key: rsa.RSAPrivateKey) -> None:
        """A set that carries a private key is refused rather than used."""
        private = json.loads(RSAAlgorithm.to_jwk(rsa_key))
        with pytest.raises(ValueError, match="not a public key"):
            jwks_keys({"keys": [private]})


class TestCreateToken:
    """Tokens the server issues for `dicomweb token`."""

    def test_round_trip(self) -> None:
        """A created token verifies and carries the subject and roles."""
        token = create_token(SECRET, "alice", [Role.RADIOLOGIST, Role.DOCTOR], 3600, ISSUER, AUDIENCE)
        principal = Verifier(secret_keys(SECRET), ISSUER, AUDIENCE).verify(token)
        assert principal == Principal("alice", frozenset({Role.RADIOLOGIST, Role.DOCTOR}), principal.claims)

    def test_claims(self) -> None:
        """The token has iss, sub, roles, iat, nbf, exp = iat + ttl and a jti; aud only when given."""
        token = create_token(SECRET, "alice", [Role.ADMIN], 8 * 3600, ISSUER, None)
        payload = jwt.decode(token, SECRET, algorithms=["HS256"], issuer=ISSUER)
        assert payload["sub"] == "alice" and payload["roles"] == ["ADMIN"] and payload["iss"] == ISSUER
        assert payload["exp"] - payload["iat"] == 8 * 3600 and payload["nbf"] == payload["iat"]
        assert "aud" not in payload and len(payload["jti"]) == 32
        assert jwt.get_unverified_header(token)["alg"] == "HS256"

    def test_two_tokens_differ(self) -> None:
        """Each token has its own jti."""
        assert create_token(SECRET, "a", [Role.DOCTOR], 60, ISSUER) != create_token(
            SECRET, "a", [Role.DOCTOR], 60, ISSUER
        )

    @pytest.mark.parametrize(
        ("secret", "subject", "roles", "ttl"),
        [
            ("short", "alice", [Role.ADMIN], 60),
            (SECRET, "", [Role.ADMIN], 60),
            (SECRET, "alice", [], 60),
            (SECRET, "alice", [Role.ADMIN], 0),
        ],
    )
    def test_refuses_bad_arguments(self, secret: str, subject: str, roles: list[Role], ttl: int) -> None:
        """A short secret, no subject, no role or a non-positive lifetime is refused."""
        with pytest.raises(ValueError):
            create_token(secret, subject, roles, ttl, ISSUER)


STUDY = "1.2.826.0.1.3680043.8.498.77"


class TestStudyScopedTokens:
    """Tokens limited to one study, the only ones that may travel in a URL."""

    def test_round_trip(self, hs256: Verifier) -> None:
        """create_token(study=...) carries the study claim; the principal names the study."""
        token = create_token(SECRET, "viewer", [Role.DOCTOR], 300, ISSUER, study=STUDY)
        assert jwt.decode(token, SECRET, algorithms=["HS256"], issuer=ISSUER)["study"] == STUDY
        principal = hs256.verify(token)
        assert principal.study == STUDY
        principal.check_query_token()

    def test_unscoped_principal(self, hs256: Verifier) -> None:
        """A token without the claim is not scoped, and may not travel in a URL."""
        principal = hs256.verify(create_token(SECRET, "alice", [Role.DOCTOR], 300, ISSUER))
        assert principal.study is None
        with pytest.raises(TokenError, match="Authorization header"):
            principal.check_query_token()

    @pytest.mark.parametrize("study", ["../../etc", "", 12, ["1.2.3"], "1.2.03", "1." * 40])
    def test_invalid_study_claim(self, hs256: Verifier, study: object) -> None:
        """A study claim that is not a StudyInstanceUID: the token is refused, not treated as unscoped."""
        with pytest.raises(TokenError, match="study claim"):
            hs256.verify(jwt.encode(claims(study=study), SECRET, algorithm="HS256"))

    def test_long_lived_not_for_urls(self, hs256: Verifier) -> None:
        """A scoped token (from an identity provider) living past the cap verifies, but not for a URL."""
        now = int(time.time())
        token = jwt.encode(claims(study=STUDY, exp=now + 2 * MAX_QUERY_TOKEN_TTL_SECONDS), SECRET, algorithm="HS256")
        principal = hs256.verify(token)
        with pytest.raises(TokenError, match=f"within {MAX_QUERY_TOKEN_TTL_SECONDS} seconds"):
            principal.check_query_token()
        principal.check_query_token(now=now + MAX_QUERY_TOKEN_TTL_SECONDS + 1)

    @pytest.mark.parametrize(
        ("study", "ttl", "words"),
        [
            (STUDY, MAX_QUERY_TOKEN_TTL_SECONDS + 1, "at most"),
            ("1.2.abc", 60, "StudyInstanceUID"),
            ("", 60, "StudyInstanceUID"),
        ],
    )
    def test_create_refuses(self, study: str, ttl: int, words: str) -> None:
        """create_token refuses a study that is not a UID and a lifetime over the cap."""
        with pytest.raises(ValueError, match=words):
            create_token(SECRET, "viewer", [Role.DOCTOR], ttl, ISSUER, study=study)


class TestSecretFile:
    """<data-dir>/jwt-secret."""

    def test_created_private(self, tmp_path: Path) -> None:
        """The first call creates a random url-safe secret of 32+ bytes in a file only the owner can read."""
        secret = load_or_create_secret(tmp_path)
        path = tmp_path / SECRET_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(secret) >= MIN_SECRET_BYTES and len(base64.urlsafe_b64decode(secret + "=")) >= 32
        assert path.read_text().strip() == secret
        assert sorted(p.name for p in tmp_path.iterdir()) == [SECRET_FILE]  # no temporary file left

    def test_reused(self, tmp_path: Path) -> None:
        """Later calls read the same secret back; another data folder gets another secret."""
        secret = load_or_create_secret(tmp_path / "a")
        assert load_or_create_secret(tmp_path / "a") == secret
        assert load_or_create_secret(tmp_path / "b") != secret

    def test_shared_file(self, tmp_path: Path) -> None:
        """Replicas with data folders of their own that name one DICOMWEB_JWT_SECRET_FILE share its secret: the
        first creates it (private, its folder made), the second reads it, and their data folders stay empty."""
        shared = tmp_path / "secrets" / "jwt-secret"
        first = load_or_create_secret(tmp_path / "a", shared)
        assert load_or_create_secret(tmp_path / "b", str(shared)) == first
        assert stat.S_IMODE(shared.stat().st_mode) == 0o600
        assert sorted(p.name for p in shared.parent.iterdir()) == ["jwt-secret"]
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
        assert load_or_create_secret(tmp_path / "a") != first  # without the setting: the data folder's own

    def test_tokens_survive_a_restart(self, tmp_path: Path) -> None:
        """A token signed before a restart verifies after it."""
        token = create_token(load_or_create_secret(tmp_path), "alice", [Role.DOCTOR], 60, ISSUER)
        assert Verifier(secret_keys(load_or_create_secret(tmp_path)), ISSUER).verify(token).subject == "alice"

    def test_never_logged(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """Creating and reading the secret logs nothing that contains it."""
        with caplog.at_level(logging.DEBUG):
            secret = load_or_create_secret(tmp_path)
            load_or_create_secret(tmp_path)
        assert secret not in caplog.text

    @pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
    def test_readable_by_others_refused(self, tmp_path: Path) -> None:
        """A secret file others can read is refused, with the command that fixes it."""
        load_or_create_secret(tmp_path)
        (tmp_path / SECRET_FILE).chmod(0o644)
        with pytest.raises(PermissionError, match="chmod 600"):
            load_or_create_secret(tmp_path)

    def test_short_secret_in_file_refused(self, tmp_path: Path) -> None:
        """A truncated secret file is refused rather than used."""
        path = tmp_path / SECRET_FILE
        path.write_text("short\n")
        path.chmod(0o600)
        with pytest.raises(ValueError, match="shorter than"):
            load_or_create_secret(tmp_path)
