"""The package layout: member names, what each says (in English and Chinese), and the derived
members (manifest.json, registry snapshots, accounting.json, index.html).

Both sides use these functions: the builder writes the derived members with them, and the
verifier writes them again from what it verified and demands the same bytes. So nothing a
mediator reads in a derived member can say more than the checked members prove, and one
changed byte anywhere is found. JSON members are rendered one way only (sorted keys, two
spaces, UTF-8, final newline).

    manifest.json                         every other member: SHA-256 and description
    index.html                            bilingual table of contents, readable in a browser
    log/checkpoint                        the signed checkpoint every receipt is against
    log/latest-checkpoint                 the newest checkpoint (with witness cosignatures)
    log/consistency.json                  RFC 6962 consistency proof between the two
    bundles/<id>_v<n>.json|.salt|.tlog-proof          a stored Bundle, exact bytes
    registry/<YYYY-MM-DD>.json                        the registry as of a treatment date
    registry/attestations/<i>.json|.salt|.tlog-proof  a signed attestation, ledger entry i
    accounting.json                                   the accounting of disclosures
    accounting/<i>.json|.salt|.tlog-proof             an access entry's AuditEvent
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FORMAT = "medledger-case/v1"
MANIFEST = "manifest.json"
INDEX = "index.html"
ACCOUNTING = "accounting.json"
CHECKPOINT = "log/checkpoint"
LATEST = "log/latest-checkpoint"
CONSISTENCY = "log/consistency.json"
TRIPLE = (".json", ".salt", ".tlog-proof")
MAX_DOCUMENT_JSON_BYTES = 1 << 20
"""Attestations and AuditEvents are read as JSON up to this size (one is a few KiB)."""

BUNDLE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a FHIR id
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_INDEX = r"(?:0|[1-9][0-9]{0,15})"
_MEMBER = re.compile(
    r"manifest\.json|index\.html|accounting\.json"
    r"|log/checkpoint|log/latest-checkpoint|log/consistency\.json"
    r"|bundles/[A-Za-z0-9\-.]{1,64}_v[1-9][0-9]{0,8}\.(?:json|salt|tlog-proof)"
    r"|registry/\d{4}-\d{2}-\d{2}\.json"
    rf"|registry/attestations/{_INDEX}\.(?:json|salt|tlog-proof)"
    rf"|accounting/{_INDEX}\.(?:json|salt|tlog-proof)"
)

KIND_ZH = {
    "record": "病历",
    "consent": "知情同意",
    "rwd": "真实世界数据",
    "settlement": "结算",
    "access": "访问记录",
    "institution": "机构登记",
}


def valid_member_name(name: str) -> bool:
    """Whether `name` is a member name of the layout (no other name is ever read)."""
    return _MEMBER.fullmatch(name) is not None


def bundle_base(bundle_id: str, version: int) -> str:
    return f"bundles/{bundle_id}_v{version}"


def attestation_base(index: int) -> str:
    return f"registry/attestations/{index}"


def access_base(index: int) -> str:
    return f"accounting/{index}"


def registry_member(day: str) -> str:
    return f"registry/{day}.json"


def render_json(value: object) -> bytes:
    """The one rendering of every JSON member."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class DocumentMeta:
    """A stored Bundle of the case as the manifest lists it."""

    id: str
    version: int
    kind: str
    treatment_date: str  # YYYY-MM-DD
    index: int  # its ledger entry
    sender: str
    recorded: str  # the entry's time

    @property
    def base(self) -> str:
        return bundle_base(self.id, self.version)


@dataclass(frozen=True)
class CaseMeta:
    """What the manifest states besides its file list."""

    origin: str
    checkpoint_size: int
    latest_size: int
    subjects: tuple[str, ...]  # the patient's pseudonyms (hex), as in the entries
    period_from: str | None
    period_to: str | None
    documents: tuple[DocumentMeta, ...]  # by ledger index
    registry_dates: tuple[str, ...]  # sorted
    attestations: tuple[int, ...]  # ledger indexes, sorted
    accounting: tuple[int, ...]  # ledger indexes, sorted

    def file_names(self) -> list[str]:
        """Every member but the manifest, sorted."""
        names = [INDEX, ACCOUNTING, CHECKPOINT, LATEST, CONSISTENCY]
        names += [registry_member(d) for d in self.registry_dates]
        for base in (
            [d.base for d in self.documents]
            + [attestation_base(i) for i in self.attestations]
            + [access_base(i) for i in self.accounting]
        ):
            names += [base + ext for ext in TRIPLE]
        return sorted(names)

    def consent_before(self, index: int) -> DocumentMeta | None:
        """The latest consent Bundle of the case recorded before entry `index`."""
        earlier = [d for d in self.documents if d.kind == "consent" and d.index < index]
        return earlier[-1] if earlier else None


def describe(name: str, meta: CaseMeta) -> tuple[str, str]:
    """(English, Chinese) description of a member: what it is and what it proves."""
    n = meta.checkpoint_size
    fixed = {
        INDEX: ("Table of contents of this case package (this page)", "本案卷材料目录（本页）"),
        ACCOUNTING: (
            "Accounting of disclosures: every recorded access to the patient's data in the period",
            "披露记录：期间内对该患者数据的每一次访问记录",
        ),
        CHECKPOINT: (
            f"Signed checkpoint of the log at size {n}; every receipt here is against it",
            f"账本在第 {n} 条时的签名检查点；本案卷中所有收据均针对该检查点",
        ),
        LATEST: (
            f"Newest signed checkpoint of the log (size {meta.latest_size}), with any "
            "witness cosignatures",
            f"账本最新的签名检查点（第 {meta.latest_size} 条），含见证方联署（如有）",
        ),
        CONSISTENCY: (
            f"Consistency proof: the log of size {n} is a prefix of the log of size "
            f"{meta.latest_size} (nothing was changed or removed since)",
            f"一致性证明：第 {n} 条时的账本是第 {meta.latest_size} 条时账本的前缀"
            "（此后无修改或删除）",
        ),
    }
    if name in fixed:
        return fixed[name]
    if name.startswith("registry/") and not name.startswith("registry/attestations/"):
        day = name[len("registry/") : -len(".json")]
        return (
            f"Institution registry as of {day} (a treatment date): licences and accreditations",
            f"截至 {day}（诊疗日期）的医疗机构登记：执业许可与认证",
        )
    base, _, ext = name.rpartition(".")
    if base.startswith("bundles/"):
        doc = next(d for d in meta.documents if d.base == base)
        what_en = f"Bundle {doc.id} version {doc.version} ({doc.kind})"
        what_zh = f"文档包 {doc.id} 第 {doc.version} 版（{KIND_ZH.get(doc.kind, doc.kind)}）"
        index = doc.index
    elif base.startswith("registry/attestations/"):
        index = int(base.rpartition("/")[2])
        what_en, what_zh = "Signed registry attestation", "经签名的机构登记证明"
    else:
        index = int(base.rpartition("/")[2])
        what_en, what_zh = "Access record (FHIR AuditEvent)", "访问记录（FHIR AuditEvent）"
    if ext == "json":
        return (
            f"{what_en}, the exact bytes recorded in ledger entry {index}",
            f"{what_zh}，账本第 {index} 条所记录的原始字节",
        )
    if ext == "salt":
        return (
            f"Salt of {what_en}: SHA-256(salt ‖ bytes) is the commitment in ledger entry {index}",
            f"{what_zh}的盐值：SHA-256(盐值 ‖ 字节) 即账本第 {index} 条中的承诺值",
        )
    return (
        f"Receipt (c2sp.org/tlog-proof) of ledger entry {index}: the entry is in the log "
        f"of size {n}",
        f"账本第 {index} 条的收据（c2sp.org/tlog-proof）：该条目在第 {n} 条时的账本中",
    )


def _meta_json(meta: CaseMeta) -> dict[str, object]:
    return {
        "format": FORMAT,
        "log": {
            "origin": meta.origin,
            "checkpoint_size": meta.checkpoint_size,
            "latest_size": meta.latest_size,
        },
        "patient": {"subjects": list(meta.subjects)},
        "period": {"from": meta.period_from, "to": meta.period_to},
        "documents": [
            {
                "id": d.id,
                "version": d.version,
                "kind": d.kind,
                "treatment_date": d.treatment_date,
                "ledger_index": d.index,
                "sender": d.sender,
                "recorded": d.recorded,
            }
            for d in meta.documents
        ],
        "registry": {"dates": list(meta.registry_dates), "attestations": list(meta.attestations)},
        "accounting": list(meta.accounting),
    }


def manifest_bytes(meta: CaseMeta, members: Mapping[str, bytes]) -> bytes:
    """The manifest of a package holding `members` (every file but the manifest).

    Its `digest` is the SHA-256 of the manifest rendered without it. It is a checksum, not a
    signature: it tells a changed manifest from a changed member, so that a verifier names
    the right one; what proves anything is the log's signatures.
    """
    obj = _meta_json(meta)
    obj["files"] = [
        {
            "name": name,
            "sha256": sha256_hex(members[name]),
            "description": dict(zip(("en", "zh"), describe(name, meta), strict=True)),
        }
        for name in meta.file_names()
    ]
    obj["digest"] = sha256_hex(render_json(obj))
    return render_json(obj)


# --- derived members -------------------------------------------------------------------------


@dataclass(frozen=True)
class Committed:
    """A verified committed document: its ledger index, the entry's time and sender, and the
    parsed JSON of its exact bytes."""

    index: int
    time: str
    sender: str
    value: Any


def get_path(value: Any, *path: str | int) -> Any:
    """value[path...], or None where the shape differs (documents are read, never trusted)."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or len(value) <= step:
                return None
        elif not isinstance(value, dict):
            return None
        elif step not in value:
            return None
        value = value[step]
    return value


def registry_snapshot(day: str, attestations: Sequence[Committed]) -> dict[str, Any]:
    """The registry as of the end of `day` (UTC): per institution, the last attestation whose
    entry was recorded on or before that day."""
    latest: dict[str, Committed] = {}
    for a in sorted(attestations, key=lambda a: a.index):
        if a.time[:10] <= day:
            latest[str(get_path(a.value, "record", "org"))] = a
    rows = []
    for org in sorted(latest):
        a = latest[org]
        record = get_path(a.value, "record")
        start, end = get_path(record, "licence_valid_from"), get_path(record, "licence_valid_to")
        rows.append(
            {
                "org": org,
                "ledger_index": a.index,
                "recorded": a.time,
                "admin": get_path(a.value, "admin"),
                "key": get_path(a.value, "key"),
                "record": record,
                "licence_valid_on_date": isinstance(start, str)
                and isinstance(end, str)
                and start <= day <= end,
                "blacklisted": get_path(record, "blacklisted") is True,
                "attestation": attestation_base(a.index) + ".json",
            }
        )
    return {"date": day, "institutions": rows}


def access_summary(event: Committed) -> dict[str, Any]:
    """One line of the accounting: who accessed what, when, why and with which outcome."""
    agent = get_path(event.value, "agent", 0)
    data_types = [
        get_path(e, "what", "type")
        for e in get_path(event.value, "entity") or []
        if get_path(e, "role", "code") == "4"
    ]
    return {
        "ledger_index": event.index,
        "recorded": event.time,
        "sender": event.sender,
        "client": get_path(agent, "who", "identifier", "value"),
        "org": get_path(agent, "name"),
        "purpose": get_path(agent, "purposeOfUse", 0, "coding", 0, "code"),
        "interaction": get_path(event.value, "subtype", 0, "code"),
        "data": [t for t in data_types if isinstance(t, str)],
        "outcome": get_path(event.value, "outcome"),
        "disclosed": get_path(event.value, "type", "code") == "110106",
        "document": access_base(event.index) + ".json",
    }


def accounting(meta: CaseMeta, events: Sequence[Committed]) -> dict[str, Any]:
    return {
        "period": {"from": meta.period_from, "to": meta.period_to},
        "subjects": list(meta.subjects),
        "events": [access_summary(e) for e in sorted(events, key=lambda e: e.index)],
    }


# --- index.html ------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #999;padding:.3em .5em;text-align:left;vertical-align:top}"
    "code{font-size:.85em;word-break:break-all}"
)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    h = "".join(f"<th>{c}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>\n" for r in rows)
    return f"<table>\n<tr>{h}</tr>\n{body}</table>\n"


def _link(name: str) -> str:
    return f'<a href="{_e(name)}"><code>{_e(name)}</code></a>'


def index_html(
    meta: CaseMeta,
    snapshots: Mapping[str, Mapping[str, Any]],
    accounting_value: Mapping[str, Any],
) -> bytes:
    """The bilingual table of contents: static, every value escaped, no script and nothing
    loaded from elsewhere."""
    period = f"{meta.period_from or '…'} – {meta.period_to or '…'}"
    parts = [
        '<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n',
        "<title>医疗纠纷案卷材料 / Case package for a medical dispute</title>\n",
        f"<style>{_STYLE}</style>\n</head>\n<body>\n",
        "<h1>医疗纠纷案卷材料<br>Case package for a medical dispute</h1>\n",
        "<p>本案卷包含从可验证账本中导出的患者文档、收据、机构登记与访问记录。"
        "每个文件的 SHA-256 见 <code>manifest.json</code>。<br>"
        "This package holds the patient's documents, their ledger receipts, the institution "
        "registry and the accounting of disclosures, exported from a verifiable ledger. "
        "Every file's SHA-256 is in <code>manifest.json</code>.</p>\n",
        _table(
            ["项目 / Item", "值 / Value"],
            [
                ["账本 / Log", f"<code>{_e(meta.origin)}</code>"],
                [
                    "检查点 / Checkpoint",
                    f"{meta.checkpoint_size} → {meta.latest_size} ({_link(CHECKPOINT)}, "
                    f"{_link(LATEST)}, {_link(CONSISTENCY)})",
                ],
                [
                    "患者化名 / Patient pseudonyms",
                    "<br>".join(f"<code>{_e(s)}</code>" for s in meta.subjects),
                ],
                ["期间 / Period", _e(period)],
            ],
        ),
        "<h2>文档 / Documents</h2>\n",
    ]
    rows = []
    for d in meta.documents:
        consent = meta.consent_before(d.index)
        rows.append(
            [
                _link(d.base + ".json"),
                f"{_e(d.kind)} / {_e(KIND_ZH.get(d.kind, d.kind))}",
                _e(d.treatment_date),
                _e(d.sender),
                f"{d.index}<br>{_e(d.recorded)}",
                "—" if consent is None else _link(consent.base + ".json"),
                f"{_link(d.base + '.salt')}<br>{_link(d.base + '.tlog-proof')}",
            ]
        )
    parts.append(
        _table(
            [
                "文档 / Bundle",
                "类型 / Kind",
                "诊疗日期 / Treatment date",
                "提交机构 / Sender",
                "账本条目与时间 / Ledger entry, time",
                "当时的知情同意 / Consent then",
                "盐值与收据 / Salt, receipt",
            ],
            rows,
        )
    )
    parts.append("<h2>机构登记 / Institution registry</h2>\n")
    for day in meta.registry_dates:
        snap = snapshots[day]
        parts.append(f"<h3>{_e(day)} ({_link(registry_member(day))})</h3>\n")
        rows = [
            [
                _e(r["org"]),
                f"{_e(get_path(r, 'record', 'name_zh'))}<br>{_e(get_path(r, 'record', 'name_en'))}",
                f"{_e(get_path(r, 'record', 'licence_number'))}: "
                + ("有效 / valid" if r["licence_valid_on_date"] else "无效 / not valid"),
                "是 / yes" if r["blacklisted"] else "否 / no",
                f"{r['ledger_index']} ({_link(r['attestation'])})",
            ]
            for r in snap["institutions"]
        ]
        parts.append(
            _table(
                [
                    "机构 / Org",
                    "名称 / Name",
                    "执业许可（当日）/ Licence that day",
                    "黑名单 / Blacklisted",
                    "登记条目 / Attestation entry",
                ],
                rows,
            )
        )
    parts.append(f"<h2>披露记录 / Accounting of disclosures ({_link(ACCOUNTING)})</h2>\n")
    rows = [
        [
            f"{e['ledger_index']}<br>{_e(e['recorded'])}",
            f"{_e(e['org'])}<br><code>{_e(e['client'])}</code>",
            _e(e["purpose"]),
            f"{_e(e['interaction'])} {_e(', '.join(e['data']))}",
            ("已披露 / disclosed" if e["disclosed"] else "未披露 / not disclosed")
            + f" ({_e(e['outcome'])})",
            _link(e["document"]),
        ]
        for e in accounting_value["events"]
    ]
    parts.append(
        _table(
            [
                "条目与时间 / Entry, time",
                "访问方 / Accessed by",
                "目的 / Purpose",
                "操作 / Interaction",
                "结果 / Outcome",
                "审计事件 / AuditEvent",
            ],
            rows,
        )
    )
    parts.append(
        "<h2>如何验证 / How to verify</h2>\n"
        "<p><code>medledger case verify CASE.zip --key VKEY [--policy FILE]</code>：退出码 0 "
        "表示全部成立，4 表示某文件验证失败（并指出该文件），3 表示案卷格式错误。"
        "账本公钥（VKEY）须从账本运营方或可信渠道获取，而非本案卷。<br>"
        "Exit 0: everything holds; 4: a file fails (it is named); 3: the package is "
        "malformed. Obtain the log's key (VKEY) from the log's operator or another trusted "
        "source, never from this package.</p>\n"
        "<p>本案卷证明记录了什么、何时、由谁记录，不证明记录在临床上属实。<br>"
        "The package proves what was recorded, when and by whom; not that the record is "
        "clinically true.</p>\n"
        "</body>\n</html>\n"
    )
    return "".join(parts).encode()
