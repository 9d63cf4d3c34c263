"""render_viewer: the page's keys, its policy of loading nothing, and what it refuses."""

from __future__ import annotations

import base64
import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.shl.viewer import RESPONSE_HEADERS, ViewerConfigError, render_viewer
from ledger.note import Signer

VKEY = Signer("viewer.test.example/log", Ed25519PrivateKey.generate()).verifier.vkey()


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[tuple[str, dict[str, str | None], str]] = []
        self.urls: list[str] = []
        self.csp = ""
        self._open: tuple[str, dict[str, str | None]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset")]
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy":
            self.csp = a["content"] or ""
        if tag in ("script", "style"):
            self._open = (tag, a)

    def handle_data(self, data: str) -> None:
        if self._open:
            self.blocks.append((*self._open, data))

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _parse(page: bytes) -> _Page:
    p = _Page()
    p.feed(page.decode("utf-8"))
    return p


def _sha(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_page_loads_nothing_and_runs_only_its_own_code() -> None:
    page = _parse(render_viewer([VKEY]))
    assert page.urls == ["data:,"]  # the empty favicon, so the browser asks for none
    code = [b for b in page.blocks if b[0] == "script" and b[1].get("type") is None]
    styles = [b for b in page.blocks if b[0] == "style"]
    assert len(code) == 1 and len(styles) == 1
    directives = dict(d.strip().split(" ", 1) for d in page.csp.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == _sha(code[0][2])
    assert directives["style-src"] == _sha(styles[0][2])
    assert RESPONSE_HEADERS["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_keys_and_policy_are_baked_in_as_data() -> None:
    policy = "# a policy</script><script>alert(1)</script>\nquorum none\n"
    page = _parse(render_viewer([VKEY, VKEY], policy))
    data = [b for b in page.blocks if b[1].get("type") == "application/json"]
    assert len(data) == 1 and data[0][1]["id"] == "viewer-config"
    assert json.loads(data[0][2]) == {"logKeys": [VKEY, VKEY], "policy": policy}
    assert len([b for b in page.blocks if b[0] == "script"]) == 2  # nothing broke out


def test_malformed_keys_are_refused(vectors: Path) -> None:
    golang = json.loads((vectors / "signed-note" / "golang-note.json").read_text())
    for bad in [*golang["bad_vkeys"], "not a key", VKEY.replace("+", "-", 1)]:
        with pytest.raises(ViewerConfigError, match="log key"):
            render_viewer([bad])
    with pytest.raises(ViewerConfigError, match="at least one"):
        render_viewer([])
    with pytest.raises(ViewerConfigError, match="not one string"):
        render_viewer(VKEY)
