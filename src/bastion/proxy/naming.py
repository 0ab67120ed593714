"""The federated endpoint's naming scheme, so names from different upstreams never collide.

- tools and prompts: ``<upstream>__<name>`` (upstream names match ``[a-z][a-z0-9-]*`` and
  cannot contain ``__``, so the first ``__`` always splits correctly);
- resources and resource templates: ``<upstream>+<uri>``, which keeps the URI valid — the
  upstream name becomes a prefix of the URI scheme (RFC 3986 §3.1 allows ``+`` there).
"""

from __future__ import annotations

from typing import Any

from bastion.errors import ProtocolError
from bastion.jsonrpc import codes

NAME_SEPARATOR = "__"
URI_SEPARATOR = "+"
ALL_UPSTREAMS = "*"
"""The ``upstream`` of a federated exchange that belongs to no single upstream: a client
notification for all of them, or a reply Bastion composes itself (merged, renamed, or its own)."""


def qualify_name(upstream: str, name: str) -> str:
    return f"{upstream}{NAME_SEPARATOR}{name}"


def qualify_uri(upstream: str, uri: str) -> str:
    return f"{upstream}{URI_SEPARATOR}{uri}"


def unknown_name_error(kind: str, name: str) -> ProtocolError:
    """The one error for a tool or prompt that does not exist *or is hidden from this caller*:
    the two must be indistinguishable (``kind`` is "tool" or "prompt")."""
    return ProtocolError(f"Unknown {kind}: {name}", code=codes.INVALID_PARAMS)


def split_name(qualified: str, upstreams: Any, kind: str) -> tuple[str, str]:
    """(upstream, name) for a federated tool or prompt name.

    Raises:
        ProtocolError: INVALID_PARAMS when no configured upstream owns the name.
    """
    upstream, sep, name = qualified.partition(NAME_SEPARATOR)
    if not sep or not name or upstream not in upstreams:
        raise unknown_name_error(kind, qualified)
    return upstream, name


def split_uri(qualified: str, upstreams: Any) -> tuple[str, str]:
    """(upstream, uri) for a federated resource URI.

    Raises:
        ProtocolError: RESOURCE_NOT_FOUND when no configured upstream owns the URI.
    """
    upstream, sep, uri = qualified.partition(URI_SEPARATOR)
    if not sep or not uri or upstream not in upstreams:
        raise ProtocolError(f"Resource not found: {qualified}", code=codes.RESOURCE_NOT_FOUND, data={"uri": qualified})
    return upstream, uri


LIST_KEYS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}


def qualify_listing(upstream: str, method: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rename every item of one upstream's listing into the federated namespace."""
    out = []
    for item in items:
        item = dict(item)
        if method in ("tools/list", "prompts/list") and isinstance(item.get("name"), str):
            item["name"] = qualify_name(upstream, item["name"])
        elif method == "resources/list" and isinstance(item.get("uri"), str):
            item["uri"] = qualify_uri(upstream, item["uri"])
        elif method == "resources/templates/list" and isinstance(item.get("uriTemplate"), str):
            item["uriTemplate"] = qualify_uri(upstream, item["uriTemplate"])
        out.append(item)
    return out


def qualify_contents(upstream: str, result: dict[str, Any]) -> dict[str, Any]:
    """Rename the ``uri`` of every item of a resources/read result."""
    contents = result.get("contents")
    if not isinstance(contents, list):
        return result
    renamed = [
        {**c, "uri": qualify_uri(upstream, c["uri"])} if isinstance(c, dict) and isinstance(c.get("uri"), str) else c
        for c in contents
    ]
    return {**result, "contents": renamed}
