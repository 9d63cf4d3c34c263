"""Hostile input for the auditor's commands: JSON texts and bytes that no log API gives, one-line
mutations of real files, and main() run in-process with what it printed."""

from __future__ import annotations

import base64
import io
import json
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import strategies as st

from exchange.cli.main import main


def run_captured(args: list[str]) -> tuple[int, str]:
    """main() in-process: its exit code and everything it printed."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    return code, out.getvalue() + err.getvalue()


def run(args: list[str]) -> tuple[int, str]:
    """run_captured, and what it printed holds no traceback."""
    code, text = run_captured(args)
    assert "Traceback" not in text, text
    return code, text


_scalars = st.one_of(
    # JSON literals, numbers no verifier takes, strings that are not base64, base64 strings
    st.sampled_from(["null", "true", "false", "1.5", "1e999", "NaN", "-Infinity", "-0"]),
    st.sampled_from(['"\\ud800"', '"é"', '"%%%"', '"AAAA"', '"' + "A" * 44 + '"', '""']),
    st.integers().map(str),
    st.integers(19, 6000).map(lambda n: "9" * n),
    st.text(max_size=20).map(json.dumps),
    st.binary(max_size=60).map(lambda b: json.dumps(base64.b64encode(b).decode())),
)
_members = st.sampled_from(
    # the members of every JSON the auditor reads: answers, key lists, evidence
    ["hashes", "index", "documents", "note", "salt", "vkey", "added_at", "retired_at", "size"]
    + ["kind", "origin", "checkpoints", "claims", "checkpoint", "root", "via", "entries"]
    + ["data", "server_proof", "size1", "size2", "divergence", "start", "end", "observed"]
)
json_texts = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(_members, inner), max_size=5).map(
            lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"
        ),
    ),
    max_leaves=20,
)
bodies = st.one_of(
    # answers and files: JSON texts, deep nesting, raw bytes
    json_texts.map(str.encode),
    st.integers(0, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.binary(max_size=200),
)


def python_json_refuses(body: bytes) -> bool:
    """Whether Python's own json module refuses `body` (in any way)."""
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return True
    return False


def mutated(base: bytes, data: st.DataObject) -> bytes:
    """`base` with one line replaced, inserted or made digits or bytes, drawn from `data`."""
    lines = base.split(b"\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["replace", "insert", "bytes", "digits"]))
    if how == "digits":
        lines[i] = data.draw(st.sampled_from([b"", b"index ", b"extra "])) + b"9" * data.draw(
            st.integers(1, 6000)
        )
    elif how == "bytes":
        lines[i] = data.draw(st.binary(max_size=80))
    else:
        text = data.draw(st.one_of(st.text(max_size=80), json_texts)).encode()
        lines[i : i + (how == "replace")] = [text]
    return b"\n".join(lines)


def mutated_member(base: bytes, data: st.DataObject) -> bytes:
    """The JSON object `base` with one member's value replaced by a drawn JSON text."""
    obj = json.loads(base)
    key = data.draw(st.sampled_from(sorted(obj)))
    value = data.draw(json_texts)
    members = (f"{json.dumps(k)}: {value if k == key else json.dumps(v)}" for k, v in obj.items())
    return ("{" + ", ".join(members) + "}").encode()
