"""Identity: who is calling. Bearer JWTs (OAuth issuers, Kubernetes service accounts), Bastion
API keys, client certificates and anonymous access become one `Principal`, or a refusal that
carries an RFC 6750 error and an RFC 9728 `WWW-Authenticate` challenge. See docs/identity.md.
"""

from bastion.identity.apikey import (
    ApiKeyRecord,
    ApiKeyStore,
    LastUsedRecorder,
    create_api_key,
    parse_duration,
    verify_api_key,
)
from bastion.identity.authenticator import Authenticator, render_challenge
from bastion.identity.jwks import JwksCache, VerifyingKey
from bastion.identity.jwt import JwtVerifier
from bastion.identity.principal import AuthMethod, Principal
from bastion.identity.refusal import BearerError, Reason
from bastion.identity.resource import protected_resource_metadata, resource_for_path, resource_metadata_url
from bastion.identity.settings import IdentitySettings, IssuerSettings, load_identity_settings

__all__ = [
    "ApiKeyRecord",
    "ApiKeyStore",
    "AuthMethod",
    "Authenticator",
    "BearerError",
    "IdentitySettings",
    "IssuerSettings",
    "JwksCache",
    "JwtVerifier",
    "LastUsedRecorder",
    "Principal",
    "Reason",
    "VerifyingKey",
    "create_api_key",
    "load_identity_settings",
    "parse_duration",
    "protected_resource_metadata",
    "render_challenge",
    "resource_for_path",
    "resource_metadata_url",
    "verify_api_key",
]
