"""RFC 9728 metadata and resource URIs for Bastion's endpoints."""

from __future__ import annotations

import pytest

from bastion.identity import IdentitySettings, protected_resource_metadata, resource_for_path, resource_metadata_url


@pytest.mark.parametrize(
    ("resource_url", "path", "resource", "metadata_url"),
    [
        (
            "https://b.example.com",
            "",
            "https://b.example.com",
            "https://b.example.com/.well-known/oauth-protected-resource",
        ),
        (
            "https://b.example.com",
            "/mcp",
            "https://b.example.com/mcp",
            "https://b.example.com/.well-known/oauth-protected-resource/mcp",
        ),
        (
            "https://b.example.com/gw",
            "/servers/a/mcp/",
            "https://b.example.com/gw/servers/a/mcp",
            "https://b.example.com/.well-known/oauth-protected-resource/gw/servers/a/mcp",
        ),
    ],
)
def test_metadata_url_inserts_well_known_between_host_and_path(
    resource_url: str, path: str, resource: str, metadata_url: str
) -> None:
    assert resource_for_path(resource_url, path) == resource
    assert resource_metadata_url(resource_url, path) == metadata_url


def test_metadata_lists_advertised_issuers_scopes_and_the_endpoint_resource() -> None:
    settings = IdentitySettings.model_validate(
        {
            "resource_url": "HTTPS://Bastion.Example.com/",
            "scopes_supported": ["mcp:tools"],
            "jwt": {
                "issuers": [
                    {"issuer": "https://login.example.com/realms/agents"},
                    {
                        "issuer": "https://kubernetes.default.svc",
                        "authorization_server": False,
                        "audiences": ["bastion"],
                    },
                ]
            },
        }
    )
    assert protected_resource_metadata(settings, "/servers/github/mcp") == {
        "resource": "https://bastion.example.com/servers/github/mcp",
        "authorization_servers": ["https://login.example.com/realms/agents"],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["mcp:tools"],
    }


def test_metadata_omits_optional_members_when_not_configured() -> None:
    settings = IdentitySettings.model_validate({"resource_url": "https://bastion.example.com"})
    assert protected_resource_metadata(settings, "") == {
        "resource": "https://bastion.example.com",
        "bearer_methods_supported": ["header"],
    }
