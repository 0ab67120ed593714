"""The console's pages as HTML: layout, login, pending approvals, one approval, audit search, one interaction.

Owns markup only: each function takes values the routes fetched and returns ``Markup``; every
value goes through ``_html`` escaping. Nothing here reads a store or decides anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from bastion.approval.model import Approval, ApprovalState
from bastion.audit.entry import LogEntry
from bastion.audit.record import EventKind, Outcome
from bastion.console._html import MAX_INLINE_JSON_CHARS, Markup, html, join, render_json, render_time
from bastion.identity.principal import Principal

OUTCOMES = tuple(outcome.value for outcome in Outcome)
"""Offered in the search form, as are ``KINDS``."""
KINDS = tuple(kind.value for kind in EventKind)
NOTICES = {"approve": "You approved this call.", "deny": "You denied this call."}


def layout(base: str, title: str, body: Markup, principal: Principal | None = None) -> Markup:
    """Wrap ``body`` in the page chrome; the navigation and sign-out appear once signed in."""
    nav = Markup("")
    if principal is not None:
        groups = ", ".join(sorted(principal.groups)) or "no groups"
        nav = html(
            '<nav><a href="{}/approvals">Pending approvals</a> <a href="{}/audit">Audit search</a></nav>'
            '<form class="who" method="post" action="{}/logout"><span>Signed in as <b>{}</b> ({})</span> '
            '<button type="submit">Sign out</button></form>',
            base, base, base, principal.subject, groups,
        )
    return html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>{} · Bastion console</title><link rel="stylesheet" href="{}/static/console.css"></head>'
        '<body><header><a class="brand" href="{}/approvals">Bastion console</a>{}</header>'
        '<main><h1>{}</h1>{}</main></body></html>',
        title, base, base, nav, title, body,
    )


def banner(kind: str, message: str | None) -> Markup:
    """An error (role=alert) or notice (role=status) line; empty when there is no message."""
    if not message:
        return Markup("")
    role = "alert" if kind == "error" else "status"
    return html('<p class="banner {}" role="{}">{}</p>', kind, role, message)


def login_page(base: str, next_path: str, error: str | None = None) -> Markup:
    """The sign-in form: one bearer credential (a ``bst_`` API key or a JWT)."""
    body = html(
        '{}<form class="card login" method="post" action="{}/login">'
        '<label for="token">API key or access token</label>'
        '<input id="token" name="token" type="password" autocomplete="off" required placeholder="bst_…">'
        '<input type="hidden" name="next" value="{}">'
        '<button type="submit">Sign in</button>'
        '<p class="hint">The credential is kept in an HttpOnly cookie for this console only.</p></form>',
        banner("error", error), base, next_path,
    )
    return layout(base, "Sign in", body)


def _caller(a: Approval) -> Markup:
    return html('{}<br><small>{}</small>', a.subject, a.issuer)


def approvals_page(base: str, principal: Principal, approvals: Sequence[Approval]) -> Markup:
    """The pending approvals, newest first, with masked arguments."""
    if not approvals:
        return layout(base, "Pending approvals", Markup('<p class="empty">No pending approvals.</p>'), principal)
    rows = join(
        html(
            '<tr><td><a href="{}/approvals/{}">{}</a></td><td>{}</td><td>{}</td><td><code>{}</code></td>'
            '<td><code class="args">{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            base, a.id, a.id, _caller(a), a.server, a.tool, render_json(a.arguments, limit=MAX_INLINE_JSON_CHARS),
            a.rule_id or "-", ", ".join(a.approver_groups) or "default", render_time(a.created_at),
            render_time(a.expires_at),
        )
        for a in approvals
    )
    table = html(
        '<table><thead><tr><th>Approval</th><th>Caller</th><th>Server</th><th>Tool</th><th>Arguments (masked)</th>'
        '<th>Rule</th><th>Approvers</th><th>Created</th><th>Expires</th></tr></thead><tbody>{}</tbody></table>',
        rows,
    )
    return layout(base, "Pending approvals", table, principal)


def _reviews(a: Approval) -> Markup:
    if not a.reviews:
        return Markup("<p>No reviews yet.</p>")
    rows = join(
        html('<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
             r.subject, r.verdict.value, r.reason or "", render_time(r.decided_at), r.via)
        for r in a.reviews
    )
    return html('<table><thead><tr><th>Reviewer</th><th>Verdict</th><th>Reason</th><th>At</th><th>Via</th></tr>'
                '</thead><tbody>{}</tbody></table>', rows)


def _decision_forms(base: str, a: Approval) -> Markup:
    if a.state is not ApprovalState.PENDING:
        return Markup("")
    return html(
        '<section class="decide"><form class="card" method="post" action="{}/approvals/{}/approve">'
        '<label for="approve-reason">Reason (optional)</label>'
        '<input id="approve-reason" name="reason" maxlength="2000">'
        '<button class="approve" type="submit">Approve</button></form>'
        '<form class="card" method="post" action="{}/approvals/{}/deny">'
        '<label for="deny-reason">Reason for denying (required)</label>'
        '<input id="deny-reason" name="reason" maxlength="2000" required>'
        '<button class="deny" type="submit">Deny</button></form></section>',
        base, a.id, base, a.id,
    )


def approval_page(base: str, principal: Principal, a: Approval, *, notice: str | None = None,
                  error: str | None = None) -> Markup:
    """One approval: the call, its binding, its reviews and (while pending) approve/deny forms."""
    facts = html(
        '<dl class="facts"><dt>State</dt><dd><span class="state {}">{}</span></dd>'
        '<dt>Caller</dt><dd>{}</dd><dt>Server</dt><dd>{}</dd><dt>Tool</dt><dd><code>{}</code></dd>'
        '<dt>Rule</dt><dd>{}</dd><dt>Approvers</dt><dd>{} (approve at {}, deny at {})</dd>'
        '<dt>Caller\'s reason</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd><dt>Expires</dt><dd>{}</dd>'
        '<dt>Arguments SHA-256</dt><dd><code>{}</code></dd></dl>'
        '<h2>Arguments (masked)</h2><pre>{}</pre><h2>Reviews</h2>{}',
        a.state.value, a.state.value, _caller(a), a.server, a.tool, a.rule_id or "-",
        ", ".join(a.approver_groups) or "default groups", a.min_approvals, a.deny_min, a.caller_reason or "-",
        render_time(a.created_at), render_time(a.expires_at), a.arguments_sha256, render_json(a.arguments),
        _reviews(a),
    )
    body = join([banner("error", error), banner("notice", NOTICES.get(notice or "")), facts,
                 _decision_forms(base, a)])
    return layout(base, f"Approval {a.id}", body, principal)


def _fields(entry: LogEntry) -> dict[str, Any]:
    try:
        doc = orjson.loads(entry.body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _group(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc.get(name)
    return value if isinstance(value, dict) else {}


def _select(name: str, label: str, options: Sequence[str], chosen: str) -> Markup:
    items = join(html('<option value="{}"{}>{}</option>', o, Markup(" selected") if o == chosen else "", o)
                 for o in options)
    return html('<label>{}<select name="{}"><option value="">any</option>{}</select></label>', label, name, items)


def _search_form(base: str, filters: Mapping[str, str]) -> Markup:
    def box(name: str, label: str, kind: str = "text") -> Markup:
        return html('<label>{}<input name="{}" type="{}" value="{}"></label>', label, name, kind, filters.get(name, ""))

    return html(
        '<form class="card search" method="get" action="{}/audit">{}{}{}{}{}{}'
        '<button type="submit">Search</button></form>',
        base, box("subject", "Subject"), box("tool", "Tool"), _select("outcome", "Outcome", OUTCOMES,
        filters.get("outcome", "")), _select("kind", "Kind", KINDS, filters.get("kind", "")),
        box("since", "From (UTC)", "datetime-local"), box("until", "Until (UTC, exclusive)", "datetime-local"),
    )


def audit_page(base: str, principal: Principal, filters: Mapping[str, str], entries: Sequence[LogEntry] | None,
               error: str | None = None) -> Markup:
    """The search form and, after a search, the matching records (newest first)."""
    results = Markup("")
    if entries is not None and not entries:
        results = Markup('<p class="empty">No records match.</p>')
    elif entries:
        rows = []
        for e in entries:
            doc = _fields(e)
            who, what, where = _group(doc, "who"), _group(doc, "what"), _group(doc, "where")
            rows.append(html(
                '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
                '<td><code>{}</code></td><td><a href="{}/audit/interaction?origin={}&amp;seq={}">view</a></td></tr>',
                e.time, e.origin, e.seq, e.kind, doc.get("outcome"), who.get("subject"), where.get("upstream"),
                what.get("name") or what.get("method"), base, quote(e.origin, safe=""), e.seq,
            ))
        results = html(
            '<p>{} record(s), newest first.</p><table><thead><tr><th>Time</th><th>Origin</th><th>Seq</th>'
            '<th>Kind</th><th>Outcome</th><th>Subject</th><th>Server</th><th>Tool / method</th><th>Interaction</th>'
            '</tr></thead><tbody>{}</tbody></table>',
            len(entries), join(rows),
        )
    return layout(base, "Audit search", join([banner("error", error), _search_form(base, filters), results]),
                  principal)


def interaction_page(base: str, principal: Principal, entries: Sequence[LogEntry]) -> Markup:
    """One interaction: the request record, then each record naming it (approval, response)."""
    sections = join(
        html('<section class="record"><h2>{} <small>{} seq {} · {}</small></h2><pre>{}</pre></section>',
             "request" if i == 0 and e.kind == "request" else e.kind, e.origin, e.seq, e.time,
             render_json(_fields(e)))
        for i, e in enumerate(entries)
    )
    back = html('<p><a href="{}/audit">← Audit search</a></p>', base)
    return layout(base, "Interaction", join([back, sections]), principal)


def message_page(base: str, title: str, message: str, principal: Principal | None = None) -> Markup:
    """A page that only says what went wrong (not found, store unavailable, bad form)."""
    return layout(base, title, banner("error", message), principal)
