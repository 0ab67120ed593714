"""The two kinds of client endpoint and how each maps a client request onto upstream exchanges.

- ``ServerEndpoint`` (``/servers/{name}/mcp``) is transparent: every name, capability and
  result is the upstream's own, so a client cannot tell it from the upstream itself.
- ``FederatedEndpoint`` (``/mcp``) is Bastion speaking as one server in front of all upstreams,
  with the naming scheme of proxy/naming.py and merged capabilities and listings.
Every upstream-bound request becomes an Exchange and runs the whole pipeline. A reply the
federated endpoint composes itself (merged, renamed, or its own, like ``ping``) is one more
exchange around those, run through the pipeline's outer stages (``Pipeline.run_outer``): the
audit stage records the client's request before any upstream is asked and the composed reply
before it is released, so the record holds what the client receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from bastion import __version__
from bastion.errors import DenialError, ProtocolError, UpstreamError
from bastion.exchange import Exchange, Reply
from bastion.jsonrpc import codes
from bastion.jsonrpc.envelope import Message
from bastion.proxy import naming
from bastion.proxy.versions import LATEST_VERSION, SUPPORTED_VERSIONS
from bastion.upstream.link import UpstreamLink

if TYPE_CHECKING:
    from bastion.proxy.session import DownstreamSession

_MAX_LIST_PAGES = 100
_LISTING_FOR = {"tools/call": ("tools/list", "tool"), "prompts/get": ("prompts/list", "prompt")}
_NOT_RELEASED = frozenset({codes.AUDIT_UNAVAILABLE, codes.MASKING_FAILED})
"""Codes of a part Bastion refused to release because it could not be recorded (or masked). A merged
reply without that part would pass for complete, so the whole reply is refused with the part's error."""


def target_name(method: str, params: dict[str, Any] | None) -> str | None:
    """The tool/prompt name or resource URI a request is about, if any."""
    if not params:
        return None
    if method in ("tools/call", "prompts/get"):
        name = params.get("name")
    elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
        name = params.get("uri")
    elif method == "completion/complete":
        ref = params.get("ref") or {}
        name = ref.get("name") or ref.get("uri") if isinstance(ref, dict) else None
    else:
        return None
    return name if isinstance(name, str) else None


class Endpoint(Protocol):
    async def handle_request(self, session: DownstreamSession, message: Message) -> Reply: ...

    async def handle_notification(self, session: DownstreamSession, message: Message) -> None: ...

    def rename_server_params(self, upstream: str, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class _Listing:
    """One upstream's listing as this caller may see it, every page read through the pipeline."""

    items: list[dict[str, Any]]
    failure: Reply | None
    """The error reply that ended the reading before its last page; None when every page was read."""


def _not_released(reply: Reply) -> bool:
    return "error" in reply and reply["error"].get("code") in _NOT_RELEASED


def _capabilities(link: UpstreamLink) -> dict[str, Any]:
    return (link.init_result or {}).get("capabilities") or {}


class _UpstreamExchanges:
    """What both endpoints share: running upstream-bound exchanges and reading whole listings."""

    def __init__(self) -> None:
        self._readings: dict[tuple[UpstreamLink, str], asyncio.Task[_Listing]] = {}
        """Listings being read, by (link, listing method); links belong to one session each."""

    async def _run(
        self,
        session: DownstreamSession,
        link: UpstreamLink,
        method: str,
        params: dict[str, Any] | None,
        request_id: Any,
        shown_name: str | None = None,
    ) -> Reply:
        """Run one upstream-bound exchange through the pipeline (``shown_name``: the name as the client wrote it)."""
        listing = _LISTING_FOR.get(method)
        listing_failed = False
        if listing is not None and (link.name, listing[1]) not in session.caller.listed_names:
            # Policy must know the upstream's tools or prompts (annotations, and which names exist at
            # all) before it decides on a call, even when the client never listed them. The names
            # count only once every page was read (stages/policy.py); otherwise the call is refused.
            await self._list_all(session, link, listing[0], request_id)
            listing_failed = (link.name, listing[1]) not in session.caller.listed_names
        inflight = session.inflight_for(request_id)

        async def deliver(ex: Exchange) -> Reply:
            if ex.method == "initialize":
                return await link.initialize(ex.params or {})
            return await link.request(ex.method, ex.params, context=inflight)

        ex = session.exchange(method, params, request_id, link.name, deliver, name=target_name(method, params))
        ex.shown_name = shown_name
        ex.listing_failed = listing_failed
        ex.ask_client = functools.partial(session.ask_client, related=inflight)
        if inflight is not None:
            ex.traceparent = inflight.traceparent
            if inflight.progress_token is not None:
                ex.progress = _progress_sender(session, inflight.progress_token)
        reply = await session.gateway.pipeline(ex)
        assert reply is not None
        return reply

    async def _list_all(self, session: DownstreamSession, link: UpstreamLink, method: str, request_id: Any) -> _Listing:
        """One upstream's whole listing. Readings of the same listing that overlap share one: parallel
        first calls list the upstream once, and the pages of two readings never mix in policy's tally
        of a listing's names (``CallerContext.listing_pages``)."""
        key = (link, method)
        reading = self._readings.get(key)
        if reading is None:
            reading = session.spawn(self._read_listing(session, link, method, request_id))
            self._readings[key] = reading
            reading.add_done_callback(lambda _: self._readings.pop(key, None))
        # A caller that stops waiting (cancelled) leaves the reading to the others.
        return await asyncio.shield(reading)

    async def _read_listing(self, session: DownstreamSession, link: UpstreamLink, method: str, request_id: Any) -> _Listing:
        key = naming.LIST_KEYS[method]
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(_MAX_LIST_PAGES):
            reply = await self._run(session, link, method, {"cursor": cursor} if cursor else None, request_id)
            if "result" not in reply:
                return _Listing(items, reply)
            items.extend(reply["result"].get(key) or [])
            cursor = reply["result"].get("nextCursor")
            if not cursor:
                break
        return _Listing(items, None)


def _progress_sender(session: DownstreamSession, token: Any) -> Any:
    count = 0

    async def send(message: str) -> None:
        nonlocal count
        count += 1
        session.send_to_client(
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": count, "message": message}}
        )

    return send


async def _compose(session: DownstreamSession, message: Message, compose: Callable[[], Awaitable[Reply]]) -> Reply:
    """Answer ``message`` with the reply ``compose`` makes, as one exchange of Bastion's own
    (upstream ``naming.ALL_UPSTREAMS``) through the pipeline's outer stages: recorded before
    ``compose`` runs, its reply recorded as released — or refused when it cannot be. Policy,
    approval and masking are for the upstream exchanges inside ``compose``, which run them all."""
    method: str = message["method"]
    params = message.get("params")
    request_id = message["id"]

    async def deliver(ex: Exchange) -> Reply:
        return await compose()

    ex = session.exchange(method, params, request_id, naming.ALL_UPSTREAMS, deliver, name=target_name(method, params))
    inflight = session.inflight_for(request_id)
    if inflight is not None:
        ex.traceparent = inflight.traceparent
    reply = await session.gateway.pipeline.run_outer(ex)
    assert reply is not None
    return reply


async def _pong() -> Reply:
    return {"result": {}}


def _link(session: DownstreamSession, upstream: str) -> UpstreamLink:
    link = session.links.get(upstream)
    if link is None:
        link = session.gateway.upstreams.link(upstream, session.on_server_message, session.caller.principal)
        session.links[upstream] = link
    return link


class ServerEndpoint(_UpstreamExchanges):
    """One upstream behind ``/servers/{name}/mcp``, every name unchanged."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream

    async def handle_request(self, session: DownstreamSession, message: Message) -> Reply:
        method = message["method"]
        link = _link(session, self.upstream)
        reply = await self._run(session, link, method, message.get("params"), message["id"])
        if method == "initialize" and "result" in reply:
            version = reply["result"].get("protocolVersion")
            if version not in SUPPORTED_VERSIONS:
                raise UpstreamError(f"upstream {self.upstream!r} chose protocol version {version!r}, which Bastion does not serve")
        return reply

    async def handle_notification(self, session: DownstreamSession, message: Message) -> None:
        if message["method"] == "notifications/initialized":
            return  # the link already sent it when the upstream answered initialize
        link = session.links.get(self.upstream)
        if link is not None:
            await link.notify(message["method"], message.get("params"))

    def rename_server_params(self, upstream: str, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        return params


class FederatedEndpoint(_UpstreamExchanges):
    """All upstreams behind ``/mcp``: Bastion answers as one server and namespaces every name."""

    def __init__(self, upstreams: list[str]) -> None:
        super().__init__()
        self.upstreams = upstreams

    async def handle_request(self, session: DownstreamSession, message: Message) -> Reply:
        method = message["method"]
        params = message.get("params")
        request_id = message["id"]
        if method == "initialize":
            return await _compose(session, message, lambda: self._initialize(session, params or {}, request_id))
        if method == "ping":
            return await _compose(session, message, _pong)
        if method in naming.LIST_KEYS:
            return await _compose(session, message, lambda: self._list(session, method, request_id))
        if method == "logging/setLevel":
            return await _compose(session, message, lambda: self._set_level(session, params, request_id))
        if method in ("tools/call", "prompts/get"):
            qualified = str((params or {}).get("name", ""))
            upstream, name = naming.split_name(qualified, self.upstreams, "tool" if method == "tools/call" else "prompt")
            link = await self._ready(session, upstream)
            return await self._run(session, link, method, {**(params or {}), "name": name}, request_id, shown_name=qualified)
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            upstream, uri = naming.split_uri(str((params or {}).get("uri", "")), self.upstreams)
            link = await self._ready(session, upstream)
            upstream_params = {**(params or {}), "uri": uri}
            if method != "resources/read":
                return await self._run(session, link, method, upstream_params, request_id)

            async def read() -> Reply:
                reply = await self._run(session, link, method, upstream_params, request_id)
                return {"result": naming.qualify_contents(upstream, reply["result"])} if "result" in reply else reply

            return await _compose(session, message, read)
        if method == "completion/complete":
            return await self._complete(session, params or {}, request_id)
        raise ProtocolError(f"Method not found: {method}", code=codes.METHOD_NOT_FOUND)

    async def _initialize(self, session: DownstreamSession, params: dict[str, Any], request_id: Any) -> Reply:
        requested = params.get("protocolVersion")
        version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
        upstream_params = {**params, "protocolVersion": version}
        links = []
        for name in self.upstreams:
            with contextlib.suppress(DenialError):  # no upstream credential for this caller: not offered
                links.append(_link(session, name))
        replies = await asyncio.gather(
            *(self._run(session, link, "initialize", upstream_params, request_id) for link in links), return_exceptions=True
        )
        refused = next((r for r in replies if isinstance(r, dict) and _not_released(r)), None)
        if refused is not None:
            return refused
        capabilities: dict[str, Any] = {}
        instructions = []
        for name, reply in zip([link.name for link in links], replies, strict=True):
            if not isinstance(reply, dict) or "result" not in reply:
                session.links.pop(name, None)  # an upstream that is down is not offered in this session
                continue
            result = reply["result"]
            caps = result.get("capabilities") or {}
            for key in ("tools", "prompts"):
                if key in caps:
                    capabilities[key] = {"listChanged": True}
            if "resources" in caps:
                merged = capabilities.setdefault("resources", {"listChanged": True})
                if (caps["resources"] or {}).get("subscribe"):
                    merged["subscribe"] = True
            for key in ("logging", "completions"):
                if key in caps:
                    capabilities[key] = {}
            if result.get("instructions"):
                instructions.append(f"[{name}] {result['instructions']}")
        if not session.links:
            raise UpstreamError("no upstream could be initialized")
        result = {"protocolVersion": version, "capabilities": capabilities, "serverInfo": {"name": "bastion", "version": __version__}}
        if instructions:
            result["instructions"] = "\n\n".join(instructions)
        return {"result": result}

    async def _ready(self, session: DownstreamSession, upstream: str) -> UpstreamLink:
        link = session.links.get(upstream)
        if link is not None:
            return link
        raise UpstreamError(f"upstream {upstream!r} is unavailable in this session")

    async def _list(self, session: DownstreamSession, method: str, request_id: Any) -> Reply:
        key = naming.LIST_KEYS[method]
        capability = key if key != "resourceTemplates" else "resources"
        links = [link for link in session.links.values() if capability in _capabilities(link)]
        listings = await asyncio.gather(
            *(self._list_all(session, link, method, request_id) for link in links), return_exceptions=True
        )
        merged = []
        for link, listing in zip(links, listings, strict=True):
            if isinstance(listing, BaseException):
                continue  # as for an upstream that is down: the others are still listed
            if listing.failure is not None and _not_released(listing.failure):
                return listing.failure
            merged.extend(naming.qualify_listing(link.name, method, listing.items))
        return {"result": {key: merged}}

    async def _set_level(self, session: DownstreamSession, params: dict[str, Any] | None, request_id: Any) -> Reply:
        """Set the level on every upstream that logs; the first failure is the answer (a refusal to
        record first), since the client cannot tell which upstreams took the new level otherwise."""
        links = [link for link in session.links.values() if "logging" in _capabilities(link)]
        if not links:  # the merged capabilities did not offer logging either
            raise ProtocolError("Method not found: logging/setLevel", code=codes.METHOD_NOT_FOUND)
        replies = await asyncio.gather(*(self._run(session, link, "logging/setLevel", params, request_id) for link in links))
        failures = [r for r in replies if "error" in r]
        return next((r for r in failures if _not_released(r)), failures[0]) if failures else {"result": {}}

    async def _complete(self, session: DownstreamSession, params: dict[str, Any], request_id: Any) -> Reply:
        ref = params.get("ref") or {}
        if ref.get("type") == "ref/prompt":
            upstream, name = naming.split_name(str(ref.get("name", "")), self.upstreams, "prompt")
            ref = {**ref, "name": name}
        elif ref.get("type") == "ref/resource":
            upstream, uri = naming.split_uri(str(ref.get("uri", "")), self.upstreams)
            ref = {**ref, "uri": uri}
        else:
            raise ProtocolError("Invalid params: unknown completion ref type", code=codes.INVALID_PARAMS)
        return await self._run(session, await self._ready(session, upstream), "completion/complete", {**params, "ref": ref}, request_id)

    async def handle_notification(self, session: DownstreamSession, message: Message) -> None:
        if message["method"] == "notifications/initialized":
            return
        for link in list(session.links.values()):
            await link.notify(message["method"], message.get("params"))

    def rename_server_params(self, upstream: str, method: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
        if method == "notifications/resources/updated" and params and isinstance(params.get("uri"), str):
            return {**params, "uri": naming.qualify_uri(upstream, params["uri"])}
        return params
