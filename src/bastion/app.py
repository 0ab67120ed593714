"""The application factory: settings → store → audit log → identity → policy → masking →
pipeline → routes, and the lifespan that starts them in that order and stops them in reverse.

Nothing is served until every part is up: a store or key that cannot be opened stops the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import Receive, Scope, Send

from bastion.admin.approvals import approval_routes
from bastion.approval import ApprovalService
from bastion.approval.notify import Notifier, SlackNotifier, WebhookNotifier
from bastion.audit.keys import load_signing_key
from bastion.audit.log import AuditLog
from bastion.audit.record import EventKind
from bastion.audit.sealing import SealedField, build_sealer
from bastion.audit.timestamping import CheckpointTimestamper, build_timestamper, read_tsa_certificates
from bastion.config import Settings
from bastion.console import console_router
from bastion.errors import AuthenticationError
from bastion.identity.authenticator import Authenticator
from bastion.identity.principal import Principal
from bastion.identity.resource import protected_resource_metadata
from bastion.masking import MaskingEngine, mask_arguments
from bastion.pipeline.runner import Pipeline
from bastion.policy import PolicyEngine, PolicyWatcher, RateLimiter
from bastion.proxy.gateway import Gateway
from bastion.run_changes import record_changes_since_last_run, run_detail
from bastion.stages.approval import ApprovalStage, ApprovalStageOptions
from bastion.stages.audit import AuditStage, GatewayRecorder
from bastion.stages.confirmation import UserConfirmationStage
from bastion.stages.masking import MaskingStage
from bastion.stages.metrics import GaugeReading, Metrics, MetricsStage
from bastion.stages.pinning import ToolPinning
from bastion.stages.policy import PolicyStage
from bastion.storage import Store, open_store
from bastion.transport.http import McpHttpEndpoint
from bastion.transport.tls import check_tls_files
from bastion.upstream.factory import UpstreamFactory

log = logging.getLogger("bastion.app")


@dataclass
class Runtime:
    """Everything the lifespan started, in start order."""

    store: Store
    audit: AuditLog
    http_client: httpx.AsyncClient
    authenticator: Authenticator
    gateway: Gateway
    mcp: McpHttpEndpoint
    watcher_task: asyncio.Task[None] | None
    metrics: Metrics
    admin: Router
    approvals: ApprovalService
    exit_stack: contextlib.AsyncExitStack
    console: Router
    run_detail: Callable[[], dict[str, Any]]
    """What the run runs with now, for its ``gateway_stopped`` record."""
    timestamper: CheckpointTimestamper | None = None


def _gauges(
    gateway: Gateway, audit: AuditLog, timestamper: CheckpointTimestamper | None
) -> list[GaugeReading]:
    stats = audit.stats
    gauges = [
        GaugeReading("bastion_sessions", "Open MCP client sessions.", len(gateway.sessions)),
        GaugeReading("bastion_upstream_restarts", "Upstream sessions re-established after a crash, summed over open sessions.",
                     sum(link.restarts for s in gateway.sessions.values() for link in s.links.values())),
        GaugeReading("bastion_audit_records_committed", "Audit records made durable since start.", stats.records_committed),
        GaugeReading("bastion_audit_batches_committed", "Audit group commits since start.", stats.batches_committed),
        GaugeReading("bastion_audit_records_lost", "Audit records lost in best_effort mode since start.", stats.records_lost),
        GaugeReading("bastion_audit_store_failures", "Failed audit store writes since start.", stats.store_failures),
        GaugeReading("bastion_audit_checkpoints", "Signed checkpoints committed since start.", stats.checkpoints_committed),
        GaugeReading("bastion_audit_tree_size", "Records in this origin's log.", audit.tree_size),
    ]
    witnesses = audit.witness_stats
    if witnesses is not None:
        gauges += [
            GaugeReading("bastion_audit_witness_delivered", "Checkpoint copies a witness accepted since start.", witnesses.delivered),
            GaugeReading("bastion_audit_witness_failures", "Checkpoint copies a witness refused or timed out on.", witnesses.failures),
            GaugeReading("bastion_audit_witness_dropped", "Checkpoints not offered to witnesses: queue full.", witnesses.dropped),
        ]
    for sink in audit.sinks.sinks if audit.sinks is not None else ():
        label = (("sink", sink.name),)
        gauges += [
            GaugeReading("bastion_audit_sink_records_sent", "Records a sink delivered since start.", sink.stats.records_sent, label),
            GaugeReading("bastion_audit_sink_records_dropped", "Records a sink dropped (buffer full, refused by the receiver, cut at shutdown).",
                         sink.stats.records_dropped, label),
            GaugeReading("bastion_audit_sink_delivery_failures", "Failed sink deliveries since start, retried or not.",
                         sink.stats.delivery_failures, label),
        ]
    if timestamper is not None:
        stamps = timestamper.stats
        gauges.append(GaugeReading("bastion_audit_timestamps", "RFC 3161 tokens stored for checkpoints since start.", stamps.stamped))
        gauges.append(GaugeReading("bastion_audit_timestamp_failures", "Failed RFC 3161 time-stamp requests since start.",
                                   stamps.failures))
    return gauges


async def _policy_source(settings: Settings, recorder: GatewayRecorder) -> tuple[Callable[[], PolicyEngine], PolicyWatcher | None]:
    if settings.policy is not None:
        engine = PolicyEngine(settings.policy)
        return (lambda: engine), None

    async def on_change(old_hash: str, new_hash: str) -> None:
        await recorder.gateway(EventKind.CONFIG_CHANGED, {"what": "policy", "old_policy_hash": old_hash, "new_policy_hash": new_hash})

    assert settings.policy_file is not None
    watcher = await PolicyWatcher.open(Path(settings.policy_file), on_change=on_change, interval_s=settings.policy_reload_s)
    return (lambda: watcher.engine), watcher


def preflight(settings: Settings) -> None:
    """Check what validation alone cannot: the signing key loads, policy regexes and CEL compile,
    masking profiles resolve, the policy file (if any) is valid, the TLS and TSA certificate files
    (if any) load.

    Raises:
        ConfigError: naming what is wrong.
    """
    load_signing_key(path=settings.audit.signing_key_file, env_var=settings.audit.signing_key_env)
    build_sealer(settings.audit.seal_raw, settings.audit.origin)
    if settings.audit.timestamping is not None and settings.audit.timestamping.ca_file is not None:
        read_tsa_certificates(settings.audit.timestamping.ca_file)
    MaskingEngine(settings.masking)
    if settings.tls is not None:
        check_tls_files(settings.tls)
    if settings.policy is not None:
        PolicyEngine(settings.policy)
    elif settings.policy_file is not None:
        PolicyEngine.from_file(Path(settings.policy_file))


async def start_runtime(settings: Settings) -> Runtime:
    """Open every part; raises (ConfigError, StorageError) if any cannot start."""
    store = await open_store(settings.store)
    http_client = httpx.AsyncClient(timeout=10.0)
    audit = AuditLog.from_settings(store, settings.audit, http_client=http_client)
    timestamper = build_timestamper(settings.audit.timestamping, store, http_client, settings.audit.origin)
    await audit.start()
    if timestamper is not None:
        await timestamper.start()
    masking = MaskingEngine(settings.masking)
    recorder = GatewayRecorder(audit, masking.masker(None))
    engine_source, watcher = await _policy_source(settings, recorder)
    await record_changes_since_last_run(store, audit, settings, engine_source().policy_hash)
    authenticator = Authenticator.from_settings(settings.identity, store.api_keys)
    approvals = _approval_service(settings, store, audit, http_client)
    exit_stack = contextlib.AsyncExitStack()
    await exit_stack.enter_async_context(approvals.running())
    display_masker = masking.masker(None)
    metrics = Metrics()
    sealer = build_sealer(settings.audit.seal_raw, settings.audit.origin)
    pipeline = Pipeline(
        outer=[MetricsStage(metrics, settings.upstreams), AuditStage(audit, masking.masker(None), sealer)],
        inner=[
            PolicyStage(
                engine_source,
                RateLimiter(),
                frozenset(name for name, up in settings.upstreams.items() if up.trusted),
                pinning=ToolPinning(store.tool_pins, lambda change: recorder.gateway(EventKind.CONFIG_CHANGED, change)),
            ),
            UserConfirmationStage(audit.append, lambda args: mask_arguments(display_masker, args).value),
            ApprovalStage(
                approvals,
                lambda args: mask_arguments(display_masker, args).value,
                ApprovalStageOptions(grant_s_by_rule=settings.approval.grants_s),
            ),
            MaskingStage(
                masking, settings.masking.mask_arguments_upstream, sealer is not None and SealedField.RESULT in sealer.fields
            ),
        ],
    )
    gateway = Gateway(settings, pipeline, UpstreamFactory(settings.upstreams), recorder)
    metrics.add_gauges(lambda: _gauges(gateway, audit, timestamper))

    async def authenticate(headers: Mapping[str, str], path: str, peer: str | None, cert_subject: str | None) -> Principal:
        return await authenticator.authenticate(headers, cert_subject, path=path, peer_host=peer)

    mcp = McpHttpEndpoint(gateway, authenticate, recorder.refusal)

    operator_groups = frozenset(settings.operators.groups)

    async def authenticate_admin(headers: Mapping[str, str]) -> Principal:
        principal = await authenticator.authenticate(headers, path="/admin")
        if operator_groups and not principal.groups & operator_groups:
            raise AuthenticationError("not an operator", data={"reason": "not_an_operator", "status_code": 403})
        return principal

    admin = Router(routes=approval_routes(approvals, authenticate_admin))
    console = console_router(approvals, store, audit, authenticate_admin)  # same credentials as the admin API
    await gateway.start()
    await recorder.gateway(EventKind.GATEWAY_STARTED, run_detail(settings, engine_source().policy_hash, audit))
    watcher_task = asyncio.create_task(watcher.run(), name="policy-watcher") if watcher is not None else None
    return Runtime(store, audit, http_client, authenticator, gateway, mcp, watcher_task, metrics, admin, approvals, exit_stack,
                   console, lambda: run_detail(settings, engine_source().policy_hash, audit), timestamper)


def _approval_service(settings: Settings, store: Store, audit: AuditLog, http_client: httpx.AsyncClient) -> ApprovalService:
    options = settings.approval
    notifiers: list[Notifier] = []
    if options.webhook is not None:
        notifiers.append(
            WebhookNotifier(options.webhook.url, options.webhook.secret.encode(), http_client, link_base=options.console_url)
        )
    if options.slack_webhook_url is not None:
        notifiers.append(SlackNotifier(options.slack_webhook_url, http_client, link_base=options.console_url))
    return ApprovalService(
        store.approvals,
        audit.append,
        instance=settings.audit.origin,  # one origin per gateway instance, stable across restarts
        default_approver_groups=frozenset(options.default_approver_groups),
        notifiers=notifiers,
    )


async def stop_runtime(runtime: Runtime) -> None:
    """Stop in reverse order; the final audit record and checkpoint are written last."""
    if runtime.watcher_task is not None:
        runtime.watcher_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runtime.watcher_task
    await runtime.gateway.aclose()
    await runtime.exit_stack.aclose()  # the approval service: notifier tasks, expiry sweep, LISTEN
    await runtime.authenticator.aclose()
    with contextlib.suppress(Exception):
        await runtime.gateway.recorder.gateway(EventKind.GATEWAY_STOPPED, runtime.run_detail())
    await runtime.audit.aclose()
    if runtime.timestamper is not None:
        await runtime.timestamper.aclose()  # after the final checkpoint, so that one is stamped too
    await runtime.store.aclose()
    await runtime.http_client.aclose()


def _mcp_route(path: str) -> str | None:
    """"" for /mcp, the upstream name for /servers/<name>/mcp, None for any other path."""
    if path == "/mcp":
        return ""
    if path.startswith("/servers/") and path.endswith("/mcp"):
        name = path[len("/servers/") : -len("/mcp")]
        if name and "/" not in name:
            return name
    return None


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI application for one gateway instance."""
    state: dict[str, Runtime] = {}

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        runtime = state.get("runtime")
        if runtime is None or not runtime.gateway.accepting:
            return JSONResponse({"status": "not ready", "reason": "starting or stopping"}, status_code=503)
        factory = runtime.gateway.upstreams
        names = list(settings.upstreams)
        problems = dict(zip(names, await asyncio.gather(*(factory.probe(n) for n in names)), strict=True))
        checks = {"audit_store": "ok" if runtime.audit.healthy else "last write failed"}
        checks.update({f"upstream:{n}": p or "ok" for n, p in problems.items()})
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503)

    async def resource_metadata(request: Request) -> Response:
        path = "/" + request.path_params.get("path", "")
        return JSONResponse(protected_resource_metadata(settings.identity, path if path != "/" else ""))

    async def metrics(request: Request) -> Response:
        runtime = state.get("runtime")
        if runtime is None:
            return Response(status_code=503)
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["runtime"] = await start_runtime(settings)
        app.state.runtime = state["runtime"]
        try:
            yield
        finally:
            await stop_runtime(state.pop("runtime"))

    class _Admin:
        """Forwards to the admin API of the running runtime (built in the lifespan)."""

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await state["runtime"].admin(scope, receive, send)

    class _Console:
        """Forwards to the web console of the running runtime (built in the lifespan)."""

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await state["runtime"].console(scope, receive, send)

    class _App(Starlette):
        """Starlette for everything but the MCP endpoints, which every tool call hits: those skip
        the router and the framework's middleware (their errors are shaped by the endpoint itself)."""

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http" and "runtime" in state:
                upstream = _mcp_route(scope["path"])
                if upstream is not None:
                    scope["path_params"] = {"name": upstream} if upstream else {}
                    await state["runtime"].mcp(scope, receive, send)
                    return
            await super().__call__(scope, receive, send)

    return _App(
        routes=[
            Route("/admin/approvals", _Admin(), methods=["GET"]),
            Route("/admin/approvals/{rest:path}", _Admin(), methods=["GET", "POST"]),
            Mount("/console", app=_Console()),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/.well-known/oauth-protected-resource", resource_metadata),
            Route("/.well-known/oauth-protected-resource/{path:path}", resource_metadata),
        ],
        lifespan=lifespan,
    )
