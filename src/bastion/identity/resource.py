"""Bastion as an OAuth protected resource: its resource identifiers and RFC 9728 metadata.

Owns the mapping from a request path to the resource URI a token must be issued for
(RFC 8707) and to the metadata document clients discover from a 401 (RFC 9728 §3; MCP
authorization 2025-06-18 and 2025-11-25). Serving the well-known route belongs to the transport.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from bastion.identity.settings import IdentitySettings

WELL_KNOWN_PREFIX = "/.well-known/oauth-protected-resource"


def resource_for_path(resource_url: str, path: str) -> str:
    """The resource URI of the endpoint at `path` ("" or "/" is Bastion as a whole).

    Precondition: `resource_url` is canonical (as `IdentitySettings` stores it).
    """
    suffix = path.rstrip("/")
    if suffix and not suffix.startswith("/"):
        suffix = "/" + suffix
    return resource_url + suffix


def resource_metadata_url(resource_url: str, path: str) -> str:
    """Where the RFC 9728 document for `path` is served: the well-known prefix goes between
    the host and the path of the resource URI (RFC 9728 §3.1)."""
    parts = urlsplit(resource_for_path(resource_url, path))
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN_PREFIX}{parts.path}"


def protected_resource_metadata(settings: IdentitySettings, path: str) -> dict[str, Any]:
    """The RFC 9728 §2 document for the endpoint at `path`.

    `resource` equals the URI the metadata URL was built from (§3.3), so clients that check
    it accept it; `authorization_servers` lists the issuers marked `authorization_server`.
    """
    document: dict[str, Any] = {
        "resource": resource_for_path(settings.resource_url, path),
        "bearer_methods_supported": ["header"],
    }
    servers = [issuer.issuer for issuer in settings.jwt.issuers if issuer.authorization_server]
    if servers:
        document["authorization_servers"] = servers
    if settings.scopes_supported:
        document["scopes_supported"] = list(settings.scopes_supported)
    return document
