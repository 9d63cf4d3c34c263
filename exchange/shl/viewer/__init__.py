"""The SMART Health Links viewer: one static page, served at ``GET /shl/view``.

The page reads a ``shlink:/`` link from its URL fragment (which browsers never send to the
server), asks for the recipient's name (or takes it from the ``recipient`` query parameter)
and the passcode when the link's ``P`` flag asks for one, fetches the manifest and files,
decrypts them with WebCrypto, and verifies the patient summary against the log keys it was
built with: the checkpoint's Ed25519 signature (and a witness quorum when built with a
policy), the RFC 6962 inclusion proof, and SHA-256(salt || bytes) of the exact bytes shown.
Its verdict is ``<output id="verification" data-status="verified|failed">``.

The page is self-contained: styles and scripts are inlined here, no build step, nothing
loaded from elsewhere, and a Content-Security-Policy in the page allows only its own inline
script and style (by hash). What the page expects of the server is in docs/shl.md.

    render_viewer(log_vkeys, policy_text=None) -> bytes   # the page, keys baked in
    RESPONSE_HEADERS                                      # headers to serve it with
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from ledger.note import NoteError, Verifier

__all__ = ["RESPONSE_HEADERS", "ViewerConfigError", "render_viewer"]

_HERE = Path(__file__).resolve().parent
# Inlined in this order: each script uses only those before it.
_SCRIPTS = ("verify.js", "shl.js", "ips.js", "viewer.js")
_SLOT = re.compile(r"<!--medledger:(csp|style|config|script)-->")

RESPONSE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    # The page holds decrypted health data once opened: never framed, cached or referred.
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
"""Headers for the response that serves the page (the rest of its policy is in the page)."""


class ViewerConfigError(ValueError):
    """A log key given to render_viewer is not a signed-note Ed25519 verifier key."""


@cache
def _assets() -> tuple[str, str, str]:
    template = (_HERE / "viewer.html").read_text(encoding="utf-8")
    style = (_HERE / "viewer.css").read_text(encoding="utf-8")
    script = "\n".join((_HERE / name).read_text(encoding="utf-8") for name in _SCRIPTS)
    for name, text in (("style", style), ("script", script)):
        if f"</{name}" in text.lower():
            raise RuntimeError(f"the viewer's {name} must not contain </{name}")
    return template, style, script


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render_viewer(log_vkeys: Sequence[str], policy_text: str | None = None) -> bytes:
    """The viewer page (UTF-8 HTML) trusting the log's verifier keys and, when given, a C2SP
    tlog-policy whose witness quorum every checkpoint must meet.

    `log_vkeys` are signed-note verifier keys (``<name>+<hex id>+<base64 key>``), checked here
    so a misconfigured server fails at start rather than in a doctor's browser. Give the keys
    active now and serve receipts against the latest checkpoint: the page does not apply the
    key-lifetime rule of ledger/keyset.py, so a retired key should not be among them.
    Raises ViewerConfigError.
    """
    if isinstance(log_vkeys, str):
        raise ViewerConfigError("log_vkeys is a list of verifier keys, not one string")
    keys = []
    for vkey in log_vkeys:
        try:
            keys.append(Verifier.from_vkey(vkey).vkey())
        except NoteError as e:
            raise ViewerConfigError(f"log key {vkey!r}: {e}") from None
    if not keys:
        raise ViewerConfigError("the viewer needs at least one log key")
    template, style, script = _assets()
    # JSON in a <script type="application/json"> data block: no "<" may end it early.
    config = json.dumps({"logKeys": keys, "policy": policy_text}, ensure_ascii=True)
    config = config.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    csp = (
        "default-src 'none'; "
        f"script-src {_csp_hash(script)}; style-src {_csp_hash(style)}; "
        "connect-src 'self' https:; img-src data:; base-uri 'none'; form-action 'none'"
    )
    slots = {"csp": csp, "style": style, "config": config, "script": script}
    return _SLOT.sub(lambda m: slots[m.group(1)], template).encode("utf-8")
