"""Microbenchmark: µs per bearer-JWT verification with the signing key already cached.

Covers bastion.identity.jwt.JwtVerifier.verify_jwt end to end (parse, allow-list, key lookup,
signature, claims, Principal) for ES256, EdDSA, RS256 and PS256, next to the bare
`cryptography` signature check so the verifier's own overhead is visible. No network: the
JWKS is served by an httpx.MockTransport and fetched once before timing.

Run: .venv/bin/python bench/identity_jwt.py [--iterations N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from bastion.identity.jwks import JwksCache
from bastion.identity.jwt import JwtVerifier
from bastion.identity.settings import IdentitySettings

ISSUER = "https://idp.example.com"
AUDIENCE = "https://bastion.example.com"


def _keys() -> dict[str, tuple[Any, dict[str, Any]]]:
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_private = ec.generate_private_key(ec.SECP256R1())
    ed_private = ed25519.Ed25519PrivateKey.generate()
    return {
        "ES256": (ec_private, ECAlgorithm.to_jwk(ec_private.public_key(), as_dict=True)),
        "EdDSA": (ed_private, OKPAlgorithm.to_jwk(ed_private.public_key(), as_dict=True)),
        "RS256": (rsa_private, RSAAlgorithm.to_jwk(rsa_private.public_key(), as_dict=True)),
        "PS256": (rsa_private, RSAAlgorithm.to_jwk(rsa_private.public_key(), as_dict=True)),
    }


async def _bench(iterations: int) -> None:
    keys = _keys()
    jwks = {"keys": [{**jwk, "kid": alg, "alg": alg} for alg, (_, jwk) in keys.items()]}
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200, json=jwks)))
    settings = IdentitySettings.model_validate(
        {
            "resource_url": AUDIENCE,
            "jwt": {"issuers": [{"issuer": ISSUER, "jwks_url": ISSUER + "/jwks", "algorithms": list(keys)}]},
        }
    )
    cache = JwksCache(settings.jwt.issuers[0], http=http)
    verifier = JwtVerifier(settings, {ISSUER: cache})
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 3600, "groups": ["eng"]}
    print(f"{'alg':<6} {'verify_jwt µs':>14} {'bare signature µs':>18}   ({iterations} iterations)")
    for alg, (private, _) in keys.items():
        token = pyjwt.encode(claims, private, algorithm=alg, headers={"kid": alg})
        await verifier.verify_jwt(token)  # warm: fetches the JWKS once
        start = time.perf_counter()
        for _ in range(iterations):
            await verifier.verify_jwt(token)
        full_us = (time.perf_counter() - start) / iterations * 1e6

        algorithm = get_default_algorithms()[alg]
        head, body, sig = token.split(".")
        message, signature = f"{head}.{body}".encode(), pyjwt.utils.base64url_decode(sig)
        public = private.public_key()
        start = time.perf_counter()
        for _ in range(iterations):
            algorithm.verify(message, public, signature)
        bare_us = (time.perf_counter() - start) / iterations * 1e6
        print(f"{alg:<6} {full_us:>14.1f} {bare_us:>18.1f}")
    await cache.aclose()
    await http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5000)
    asyncio.run(_bench(parser.parse_args().iterations))


if __name__ == "__main__":
    main()
