"""The configuration file: one YAML document → frozen, validated settings (ConfigError otherwise).

``${VAR}`` / ``${VAR:-default}`` in any string are replaced from the environment before
validation, so secrets stay out of the file. Every section is a pydantic model with
``extra="forbid"``: an unknown key is an error that names its path.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bastion.audit.settings import AuditSettings
from bastion.errors import ConfigError
from bastion.identity.settings import IdentitySettings
from bastion.masking.settings import MaskingSettings
from bastion.policy.conditions import compile_globs
from bastion.policy.settings import PolicySettings

if TYPE_CHECKING:
    from bastion.identity.principal import Principal

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_UPSTREAM_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerCredential(Model):
    """Upstream credentials for the callers this entry matches (first match wins)."""

    subject: str = Field("*", description="Glob on the caller's subject (* any run, ? any one character, as in policy).")
    issuer: str | None = Field(
        None, description="The caller's issuer must be exactly this (a subject is unique only with its issuer; empty: any)."
    )
    groups: list[str] = Field(default_factory=list, description="The caller must be in one of these groups (empty: any).")
    headers: dict[str, str] = Field(default_factory=dict, description="Headers added for these callers (HTTP upstreams).")
    env: dict[str, str] = Field(default_factory=dict, description="Environment added for these callers (stdio upstreams).")

    @cached_property
    def _subject_pattern(self) -> re.Pattern[str]:
        return compile_globs([self.subject])

    def matches(self, caller: Principal) -> bool:
        """Whether this entry is for ``caller``: subject glob, issuer and groups all hold."""
        return (
            self._subject_pattern.match(caller.subject) is not None
            and (self.issuer is None or caller.issuer == self.issuer)
            and (not self.groups or bool(caller.groups.intersection(self.groups)))
        )


class UpstreamSettings(Model):
    """One upstream MCP server: a stdio child (``command``) or an HTTP endpoint (``url``)."""

    command: list[str] | None = Field(None, description="Argv of a stdio server that Bastion starts and supervises.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment for the stdio child (added to a minimal base).")
    cwd: str | None = Field(None, description="Working directory of the stdio child.")
    url: str | None = Field(None, description="URL of an HTTP upstream.")
    transport: Literal["streamable-http", "sse"] = Field(
        "streamable-http", description="HTTP upstream transport: streamable-http (2025-03-26+) or sse (legacy 2024-11-05)."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Headers Bastion sends to an HTTP upstream (its own credentials).")
    timeout_s: float = Field(60.0, gt=0, description="Longest wait for one upstream reply before UPSTREAM_TIMEOUT.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Longest wait to start or reach the upstream and initialize it.")
    trusted: bool = Field(False, description="Trust the upstream's tool annotations (destructiveHint, readOnlyHint) in policy.")
    restart_backoff_s: float = Field(0.5, gt=0, description="First delay before restarting a crashed stdio child; doubles up to 30 s.")
    credentials: list[CallerCredential] = Field(
        default_factory=list,
        description="Per-caller upstream credentials; when set, a caller matching no entry is refused (never sent with none).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> UpstreamSettings:
        if (self.command is None) == (self.url is None):
            raise ValueError("give exactly one of 'command' (stdio) or 'url' (HTTP)")
        if self.command is not None and not self.command:
            raise ValueError("'command' must not be empty")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("'url' must start with http:// or https://")
        return self


class HttpSettings(Model):
    """The client-facing HTTP endpoint."""

    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"],
        description="Host header values accepted (DNS-rebinding protection); '*' accepts any.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Origin header values accepted besides same-host origins; '*' accepts any."
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Largest request body accepted (HTTP 413 beyond).")
    session_idle_s: float = Field(3600.0, gt=0, description="A session unused this long is closed with its upstream sessions.")
    max_sessions: int = Field(10_000, gt=0, description="Most concurrent MCP sessions; new ones get HTTP 503 beyond.")
    replay_events: int = Field(256, ge=0, description="SSE events kept per stream for resumption with Last-Event-ID.")
    shutdown_grace_s: float = Field(10.0, ge=0, description="How long in-flight calls may finish after a stop signal.")


class WebhookSettings(Model):
    """A generic approval webhook: JSON body signed with HMAC-SHA256 of ``secret``."""

    url: str = Field(description="Where approval requests are POSTed.")
    secret: str = Field(min_length=16, description="HMAC-SHA256 key for the X-Bastion-Signature header.")


class ApprovalSettings(Model):
    """Human approval of calls a policy rule marks ``require_approval``."""

    default_approver_groups: list[str] = Field(
        default_factory=list, description="Approver groups for rules that name none (empty: such rules can never be approved)."
    )
    grants_s: dict[str, float] = Field(
        default_factory=dict, description="Rule id → seconds: an approval under that rule grants a time-box for the subject and tool."
    )
    console_url: str | None = Field(None, description="Base URL for links in notifications.")
    webhook: WebhookSettings | None = Field(None, description="Generic signed webhook notified of new approvals.")
    slack_webhook_url: str | None = Field(None, description="Slack-compatible incoming webhook notified of new approvals.")


class OperatorSettings(Model):
    """Who may use the operator surfaces (the admin API at /admin and the console at /console)."""

    groups: list[str] = Field(
        default_factory=list,
        description="Groups allowed in; empty admits every authenticated identity (agents included): set it in production.",
    )


class TlsSettings(Model):
    """TLS on the listener, terminated by uvicorn itself; optionally with client certificates (mTLS)."""

    certfile: str = Field(description="PEM file with the server certificate (and its chain, leaf first).")
    keyfile: str | None = Field(None, description="PEM file with the server's private key (omit if it is in certfile).")
    client_ca_file: str | None = Field(
        None, description="PEM bundle of the CAs client certificates must chain to; required unless client_cert is none."
    )
    client_cert: Literal["none", "optional", "required"] = Field(
        "none",
        description="Ask clients for a certificate: none; optional (verified if sent); required (no cert, no handshake).",
    )
    client_subject: Literal["dn", "spiffe_id"] = Field(
        "dn",
        description="What becomes the caller's subject (identity.mtls.enabled): the RFC 4514 subject DN, or the "
        "certificate's single spiffe:// URI SAN.",
    )

    @model_validator(mode="after")
    def _ca_with_client_certs(self) -> TlsSettings:
        if self.client_cert != "none" and self.client_ca_file is None:
            raise ValueError(f"client_cert: {self.client_cert} needs client_ca_file (the CAs client certificates chain to)")
        if self.client_cert == "none" and self.client_ca_file is not None:
            raise ValueError("client_ca_file is unused with client_cert: none; set client_cert to optional or required")
        return self


class Settings(Model):
    """The whole configuration file."""

    listen: str = Field("127.0.0.1:8080", description="host:port the MCP endpoint listens on.")
    store: str = Field("sqlite:///./bastion.db", description="Store URL: sqlite:///PATH or postgresql://...")
    upstreams: dict[str, UpstreamSettings] = Field(description="Upstream MCP servers by name ([a-z][a-z0-9-]*).")
    http: HttpSettings = Field(default_factory=HttpSettings)
    tls: TlsSettings | None = Field(None, description="Serve HTTPS (and optionally verify client certificates); null: plain HTTP.")
    identity: IdentitySettings = Field(description="Who may call: JWT issuers, API keys, mTLS, or explicit anonymous access.")
    audit: AuditSettings = Field(description="The tamper-evident audit log: signing key, checkpoints, witnesses, mode.")
    policy: PolicySettings | None = Field(None, description="Inline policy rules (or use policy_file).")
    policy_file: str | None = Field(None, description="A separate policy file (top-level key 'policy:'), hot-reloaded.")
    policy_reload_s: float = Field(2.0, gt=0, description="How often policy_file is checked for changes.")
    masking: MaskingSettings = Field(default_factory=MaskingSettings)
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    operators: OperatorSettings = Field(default_factory=OperatorSettings)
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Structured log level.")

    @field_validator("upstreams")
    @classmethod
    def _names(cls, upstreams: dict[str, UpstreamSettings]) -> dict[str, UpstreamSettings]:
        if not upstreams:
            raise ValueError("at least one upstream is required")
        for name in upstreams:
            if not _UPSTREAM_NAME.match(name):
                raise ValueError(f"upstream name {name!r} must match [a-z][a-z0-9-]* (it is used in URLs and tool names)")
        return upstreams

    @model_validator(mode="after")
    def _one_policy(self) -> Settings:
        if (self.policy is None) == (self.policy_file is None):
            raise ValueError("give exactly one of 'policy' (inline rules) or 'policy_file'")
        return self

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
        return listen

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def substitute_env(value: Any, environ: dict[str, str], path: str = "") -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a loaded YAML tree.

    Raises:
        ConfigError: a referenced variable is unset and has no default.
    """
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set")

        return _ENV_REF.sub(replace, value)
    if isinstance(value, dict):
        return {k: substitute_env(v, environ, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def parse_settings(data: Any, source: str = "<config>", environ: dict[str, str] | None = None) -> Settings:
    """Validate a loaded YAML tree.

    Raises:
        ConfigError: naming the source, each bad key path and what was expected.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    data = substitute_env(data, dict(os.environ) if environ is None else environ)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "<root>"
            message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{source}: {where}: {message}")
        raise ConfigError("\n".join(problems)) from None


def load_settings(path: str | Path, environ: dict[str, str] | None = None) -> Settings:
    """Read and validate a configuration file.

    Raises:
        ConfigError: unreadable file, invalid YAML, or invalid settings.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_settings(data, str(path), environ)
