"""The viewer's verifier and link reader, run in Chromium on public vectors and against the
project's Python verifier.

The page's scripts are global (Verify, Shl): each test evaluates them on the served page,
with inputs from the public vectors beside the project (transparency-dev Merkle proofs, the
C2SP and Go signed-note examples, the Tessera test log, the HL7 SHL specification's example
link and encrypted file) or from ledger/ itself, where the two must agree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.shl.viewer import render_viewer
from ledger import merkle
from ledger.entry import Entry, EntryError, parse_entry
from ledger.note import Signer
from tests.shl.shl_helpers import ShlServer, b64

TESSERA_VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"


@pytest.fixture(scope="module")
def js(browser: Any) -> Iterator[Any]:
    """The viewer page with no link: its scripts loaded, nothing fetched."""
    key = Ed25519PrivateKey.generate()
    server = ShlServer(render_viewer([Signer("js.test.example/log", key).verifier.vkey()]))
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.base}/shl/view")
    page.wait_for_selector("#paste-form:not([hidden])")
    yield page
    context.close()
    server.close()


def run(page: Any, script: str, arg: Any = None) -> Any:
    """Evaluates `script` (an async function of one argument) on the page."""
    return page.evaluate(script, arg)


# --- signed notes and checkpoints ------------------------------------------------------------


@pytest.mark.parametrize("name", ["c2sp-example.json", "golang-note.json"])
def test_signed_note_examples(js: Any, vectors: Path, name: str) -> None:
    d = json.loads((vectors / "signed-note" / name).read_text(encoding="utf-8"))
    got = run(
        js,
        """async (d) => {
        const key = await Verify.parseVkey(d.vkey, 1);
        const opened = await Verify.openNote(d.note, [key]);
        const flipped = d.note.replace("example", "Example")
            .replace("cryptography", "Cryptography");
        let rejected = null;
        try { await Verify.openNote(flipped, [key]); } catch (e) { rejected = e.check; }
        return [opened.text, opened.signers.map((k) => k.name), rejected];
    }""",
        d,
    )
    assert got == [d["text"], [d["vkey"].split("+")[0]], "signature"]


def test_go_note_keys(js: Any, vectors: Path) -> None:
    d = json.loads((vectors / "signed-note" / "golang-note.json").read_text(encoding="utf-8"))
    got = run(
        js,
        """async (d) => {
        const out = [];
        for (const bad of d.bad_vkeys) {
            try { await Verify.parseVkey(bad, 1); out.push("accepted"); }
            catch (e) { out.push(e.check); }
        }
        const enoch = await Verify.parseVkey(d.other_vkey_enoch, 1);
        try { await Verify.openNote(d.note, [enoch]); out.push("accepted"); }
        catch (e) { out.push(e.message); }
        return out;
    }""",
        d,
    )
    assert got[:2] == ["format", "format"]
    assert got[2].startswith("not signed by a key this page trusts")


def _tessera_leaves(vectors: Path) -> list[bytes]:
    raw = (vectors / "tessera-log" / "tile" / "entries" / "000.p" / "15").read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack(">H", raw[pos : pos + 2])
        out.append(raw[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def _stored(leaves: list[bytes]) -> dict[int, bytes]:
    hashes: dict[int, bytes] = {}
    frontier: list[bytes] = []
    for i, leaf in enumerate(leaves):
        new, frontier = merkle.append_leaf(frontier, i, leaf)
        hashes.update(new)
    return hashes


def test_tessera_checkpoints_and_inclusion(js: Any, vectors: Path) -> None:
    """A log written by another implementation: its signed checkpoints open with its key,
    and every entry's audit path leads to the signed root of size 15."""
    log = vectors / "tessera-log"
    entries = _tessera_leaves(vectors)
    hashes = _stored([merkle.leaf_hash(e) for e in entries])
    proofs = [
        [b64(h) for h in merkle.inclusion_proof(i, 15, lambda ix: [hashes[j] for j in ix])]
        for i in range(15)
    ]
    notes = [(log / f"checkpoint.{n}").read_text() for n in range(16)]
    got = run(
        js,
        """async ({notes, entries, proofs, vkey}) => {
        const key = await Verify.parseVkey(vkey, 1);
        const sizes = [];
        for (const note of notes) {
            const { checkpoint } = await Verify.openCheckpoint(note, [key], null);
            sizes.push([checkpoint.origin, Number(checkpoint.size)]);
        }
        const { checkpoint } = await Verify.openCheckpoint(notes[15], [key], null);
        const enc = new TextEncoder();
        const included = [];
        for (let i = 0; i < entries.length; i++) {
            const leaf = await Verify.leafHash(enc.encode(entries[i]));
            const proof = proofs[i].map((p) => Verify.b64decode(p, "proof"));
            await Verify.verifyInclusion(BigInt(i), checkpoint.size, leaf, proof, checkpoint.root);
            included.push(i);
        }
        let forged = null;
        try { await Verify.openCheckpoint(notes[15].replace("\\n15\\n", "\\n16\\n"), [key], null); }
        catch (e) { forged = e.check; }
        return { sizes, included, forged };
    }""",
        {
            "notes": notes,
            "entries": [e.decode() for e in entries],
            "proofs": proofs,
            "vkey": TESSERA_VKEY,
        },
    )
    assert got["sizes"] == [["example.com/log/testdata", n] for n in range(16)]
    assert got["included"] == list(range(15))
    assert got["forged"] == "signature"


# --- Merkle proofs ---------------------------------------------------------------------------


def test_inclusion_vectors(js: Any, vectors: Path) -> None:
    root = vectors / "merkle" / "inclusion"
    cases = [
        {"name": str(p.relative_to(root)), **json.loads(p.read_text())}
        for p in sorted(root.rglob("*.json"))
    ]
    assert len(cases) > 50
    got = run(
        js,
        """async (cases) => {
        const b = (s) => (s ? Verify.b64decode(s, "hash") : new Uint8Array(0));
        const out = {};
        for (const c of cases) {
            try {
                await Verify.verifyInclusion(BigInt(c.leafIdx), BigInt(c.treeSize), b(c.leafHash),
                                             (c.proof || []).map(b), b(c.root));
                out[c.name] = true;
            } catch (e) {
                if (!(e instanceof Verify.VerifyError)) throw e;
                out[c.name] = false;
            }
        }
        return out;
    }""",
        cases,
    )
    for c in cases:
        assert got[c["name"]] != c["wantErr"], f"{c['name']}: {c['desc']}"


def test_inclusion_agrees_with_the_ledger(js: Any) -> None:
    """Every index of every tree up to 33 leaves: the page's root is ledger.merkle's, and a
    proof with one bit flipped, one hash short or one too many fails."""
    cases = []
    for size in range(1, 34):
        leaves = [merkle.leaf_hash(b"leaf %d" % i) for i in range(size)]
        hashes = _stored(leaves)
        read = lambda ix, h=hashes: [h[j] for j in ix]  # noqa: E731
        root = merkle.tree_hash(size, read)
        for i in range(size):
            proof = merkle.inclusion_proof(i, size, read)
            cases.append([i, size, b64(leaves[i]), [b64(p) for p in proof], b64(root)])
    got = run(
        js,
        """async (cases) => {
        const b = (s) => Verify.b64decode(s, "hash");
        const fails = async (i, n, leaf, proof, root) => {
            try { await Verify.verifyInclusion(BigInt(i), BigInt(n), leaf, proof, root); }
            catch (e) { return e.check === "inclusion"; }
            return false;
        };
        const bad = [];
        for (const [i, n, leaf, proof, root] of cases) {
            const p = proof.map(b);
            const r = await Verify.rootFromInclusionProof(BigInt(i), BigInt(n), b(leaf), p);
            if (Verify.b64encode(r) !== root) bad.push(["root", i, n]);
            if (p.length) {
                const flipped = p.map((h) => h.slice());
                flipped[p.length - 1][0] ^= 1;
                if (!(await fails(i, n, b(leaf), flipped, b(root)))) bad.push(["flip", i, n]);
                if (!(await fails(i, n, b(leaf), p.slice(1), b(root)))) bad.push(["short", i, n]);
            }
            if (!(await fails(i, n, b(leaf), [...p, b(leaf)], b(root)))) bad.push(["long", i, n]);
            if (!(await fails(n, n, b(leaf), p, b(root)))) bad.push(["index", i, n]);
        }
        return bad;
    }""",
        cases,
    )
    assert got == []


# --- entries ---------------------------------------------------------------------------------

_hash = st.binary(min_size=32, max_size=32)
_entries = st.builds(
    Entry,
    index=st.integers(0, 2**53 - 1),
    prev=_hash,
    time=st.datetimes(min_value=datetime(1000, 1, 1)).map(
        lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + "123Z"
    ),
    kind=st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True),
    sender=st.from_regex(r"[A-Za-z0-9.-]{1,64}", fullmatch=True),
    commit=_hash,
    media=st.sampled_from(["application/fhir+json", "text/plain", "application/json"]),
    subject=st.none() | _hash,
).map(
    lambda e: (
        e if e.index else Entry(0, b"", e.time, e.kind, e.sender, e.commit, e.media, e.subject)
    )
)

_MUTATIONS = [
    lambda s: s,
    lambda s: s.replace('{"commit"', '{ "commit"'),
    lambda s: s.replace('"v":1}', '"v":1.0}'),
    lambda s: s.replace('"v":1}', '"v":1,"v":1}'),
    lambda s: s.replace('"v":1}', '"v":1,"x":""}'),
    lambda s: s.replace(',"v":1}', "}"),
    lambda s: re.sub(r'"index":(\d+)', r'"index":\1.0', s),
    lambda s: re.sub(r'"index":(\d+)', r'"index":"\1"', s),
    lambda s: s.replace('"kind":"', '"kind":"\\u0061'),
    lambda s: s.replace('"commit"', '"Commit"'),
    lambda s: s.replace('"prev":"', '"prev":"A'),
    lambda s: s.replace("=", "", 1),
    lambda s: s + "\n",
]


@settings(max_examples=40, deadline=None)
@given(entry=_entries)
def test_entry_reader_agrees_with_the_ledger(js: Any, entry: Entry) -> None:
    """The page accepts an entry exactly when ledger.entry.parse_entry does: the canonical
    bytes and none of their near misses (spacing, floats, duplicates, escapes, extra or
    missing fields, wrong padding)."""
    canonical = entry.to_bytes().decode()
    texts = list(dict.fromkeys(m(canonical) for m in _MUTATIONS))
    want = []
    for t in texts:
        try:
            parse_entry(t.encode())
            want.append(True)
        except EntryError:
            want.append(False)
    got = run(
        js,
        """async (texts) => texts.map((t) => {
        try { Verify.parseEntry(new TextEncoder().encode(t)); return true; }
        catch (e) { if (e.check !== "entry") throw e; return false; }
    })""",
        texts,
    )
    assert got == want
    assert want[0] is True


# --- witness policies ------------------------------------------------------------------------


def _cosigner_vkey(name: str, alg: int = 0x04) -> str:
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + pub).digest()[:4]
    return f"{name}+{kid.hex()}+" + b64(bytes([alg]) + pub)


def test_policy_files(js: Any) -> None:
    a, b, c = (_cosigner_vkey(f"w{i}.example") for i in range(3))
    good = (
        f"log {TESSERA_VKEY}\nwitness A {a}\n  witness B {b} https://b.example/\t\n"
        f"# comment\nwitness C {c}\ngroup AB any A B\ngroup all3 all AB C\nquorum all3\n"
    )
    bad = {
        "no quorum": f"witness A {a}\n",
        "two quorums": f"witness A {a}\nquorum A\nquorum A\n",
        "undefined member": f"witness A {a}\ngroup G 1 A B\nquorum G\n",
        "threshold above n": f"witness A {a}\ngroup G 2 A\nquorum G\n",
        "member twice": f"witness A {a}\ngroup G 1 A A\nquorum G\n",
        "name twice": f"witness A {a}\nwitness A {b}\nquorum A\n",
        "same key twice": f"witness A {a}\nwitness B {a}\nquorum A\n",
        "log key as witness": f"witness A {TESSERA_VKEY}\nquorum A\n",
        "ML-DSA cosigner": f"witness A {_cosigner_vkey('m.example', 0x06)}\nquorum A\n",
        "none in a group": f"witness A {a}\ngroup G any A none\nquorum G\n",
        "control character": f"witness A {a}\x0b\nquorum A\n",
        "unknown line": f"witness A {a}\nquorum A\nextra line\n",
    }
    got = run(
        js,
        """async ({good, bad}) => {
        const p = await Verify.parsePolicy(good);
        const read = [p.logs.length, [...p.witnesses.keys()], [...p.groups.keys()], p.quorum];
        const out = { good: read };
        for (const [name, text] of Object.entries(bad)) {
            try { await Verify.parsePolicy(text); out[name] = "accepted"; }
            catch (e) { out[name] = e.check; }
        }
        return out;
    }""",
        {"good": good, "bad": bad},
    )
    assert got.pop("good") == [1, ["A", "B", "C"], ["AB", "all3"], "all3"]
    assert got == {name: "format" for name in bad}


# --- the SHL specification's examples --------------------------------------------------------


@pytest.fixture(scope="module")
def shl_spec(vectors: Path) -> str:
    path = vectors.parent / "specs" / "hl7-smart-health-links.md"
    if not path.exists():
        pytest.skip(f"the SHL specification is not at {path}")
    return path.read_text(encoding="utf-8")


def test_spec_example_links(js: Any, shl_spec: str, vectors: Path) -> None:
    viewer_link = re.search(r'"(https://viewer\.example\.org#shlink:/[A-Za-z0-9_-]+)"', shl_spec)
    assert viewer_link
    example = json.loads((vectors.parent / "specs" / "hl7-shl-payload-example.json").read_text())
    encoded = _link(json.dumps(example).encode())
    got = run(
        js,
        """async ([viewerLink, encoded]) => [viewerLink, encoded].map((text) => {
        const l = Shl.parseLink(text);
        return [l.url, Verify.hex(l.key).length, l.flags, l.label, l.exp && l.exp.toISOString()];
    })""",
        [viewer_link.group(1), encoded],
    )
    flags = {"L": True, "P": True, "U": False}
    assert got[0] == [
        "https://ehr.example.org/qr/Y9xwkUdtmN9wwoJoN3ffJIhX2UGvCL1JnlPVNL3kDWM/m",
        64,
        flags,
        "Back-to-school immunizations for Oliver Brown",
        None,
    ]
    # The example payload: exp as a string of milliseconds, an unknown property ignored.
    assert got[1] == [example["url"], 64, flags, None, "2026-01-01T00:00:00.000Z"]


def test_spec_example_file_decrypts(js: Any, shl_spec: str) -> None:
    token = re.search(r"//(eyJhbGciOiJkaXIi[A-Za-z0-9_.-]+)", shl_spec)
    key = re.search(r'"key": "([A-Za-z0-9_-]{43})"', shl_spec)
    assert token and key
    got = run(
        js,
        """async ([token, key]) => {
        const { header, bytes } = await Shl.decryptJwe(token, Shl.b64urlDecode(key, "key"));
        const doc = JSON.parse(new TextDecoder().decode(bytes));
        const wrong = Shl.b64urlDecode(key, "key").slice();
        wrong[0] ^= 1;
        let refused = null;
        try { await Shl.decryptJwe(token, wrong); } catch (e) { refused = e.kind; }
        const vc = doc.verifiableCredential;
        return [header.cty, vc.length, vc[0].slice(0, 12), refused];
    }""",
        [token.group(1), key.group(1)],
    )
    assert got == ["application/smart-health-card", 1, "eyJ6aXAiOiJE", "file"]


def _link(payload: bytes) -> str:
    return "shlink:/" + base64.urlsafe_b64encode(payload).decode().rstrip("=")


_KEY = b'"key":"' + b"A" * 43 + b'"'


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("https://viewer.example.org#nothing-here", "link"),
        (_link(b'{"url":"https://x.example/m","key":"short"}'), "link"),
        (_link(b'{"url":"https://x.example/m",' + _KEY + b',"v":2}'), "version"),
        (_link(b'{"url":"https://x.example/m",' + _KEY + b',"flag":"PU"}'), "link"),
        (_link(b'{"url":"file:///etc/passwd",' + _KEY + b"}"), "link"),
        ("shlink:/!!!", "link"),
    ],
    ids=["no-shlink", "short-key", "newer-version", "P-with-U", "not-http", "not-base64url"],
)
def test_bad_links_are_refused(js: Any, text: str, kind: str) -> None:
    got = run(
        js,
        """(text) => { try { Shl.parseLink(text); return "accepted"; }
                                 catch (e) { return e.kind; } }""",
        text,
    )
    assert got == kind
