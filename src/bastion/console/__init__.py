"""The web console: a small server-rendered operator UI over the same library the CLI and admin API use.

Owns pages and routes only (read-only over ``Store`` plus ``ApprovalService.decide``); it holds no
business logic. Sign-in keeps the admin API's bearer credential in an HttpOnly, SameSite=Strict
cookie; POSTs are guarded by that plus an Origin check (see ``session.py``). Every value shown is
HTML-escaped (``_html.py``); no JavaScript is served.
"""

from bastion.console.routes import console_router

__all__ = ["console_router"]
