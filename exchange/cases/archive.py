"""The package's ZIP: one canonical layout, written and read here without zipfile.

Members are stored (not compressed), sorted by name, dated 1980-01-01 00:00, mode 0644, with
no extra fields and no comment. Compression is left out on purpose: deflate output differs
between zlib versions, stored bytes do not, so the same members give the same ZIP on every
machine, and the reader can demand exactly that layout (by writing the members again and
comparing) instead of trusting any header. Any ZIP tool opens it.

The reader is for hostile input: it bounds the package, the member count and each member
before holding them, refuses names outside the package layout, duplicate names and every
byte that the canonical writer would not have written.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

from .errors import CaseFailed, CaseMalformed
from .layout import valid_member_name

MAX_PACKAGE_BYTES = 512 << 20
MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 64 << 20

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes
_END = struct.Struct("<IHHHHIIH")  # 22 bytes
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
_VERSION = 20  # 2.0: stored members, no ZIP64
_MADE_BY = (3 << 8) | _VERSION  # Unix, so the mode below is read
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_MODE = 0o100644 << 16


def write_zip(members: Mapping[str, bytes]) -> bytes:
    """The canonical ZIP of `members` (name -> bytes)."""
    if len(members) > MAX_MEMBERS:
        raise ValueError(f"{len(members)} members, more than {MAX_MEMBERS}")
    out = bytearray()
    central = bytearray()
    for name in sorted(members):
        data = members[name]
        raw = name.encode("ascii")
        crc = zlib.crc32(data)
        offset = len(out)
        out += _LOCAL.pack(
            _LOCAL_SIG, _VERSION, 0, 0, 0, _DOS_DATE, crc, len(data), len(data), len(raw), 0
        )
        out += raw + data
        central += _CENTRAL.pack(
            _CENTRAL_SIG, _MADE_BY, _VERSION, 0, 0, 0, _DOS_DATE, crc, len(data), len(data),
            len(raw), 0, 0, 0, 0, _MODE, offset,
        )  # fmt: skip
        central += raw
    start = len(out)
    n = len(members)
    out += central
    out += _END.pack(_END_SIG, 0, 0, n, n, len(central), start, 0)
    return bytes(out)


def read_zip(data: bytes) -> dict[str, bytes]:
    """The members of a canonical package ZIP.

    CaseMalformed for anything but the canonical layout; CaseFailed naming the member whose
    bytes do not match the CRC-32 its header records (a byte changed inside it).
    """
    if len(data) > MAX_PACKAGE_BYTES:
        raise CaseMalformed(None, f"the package is over {MAX_PACKAGE_BYTES:,} bytes")
    members: dict[str, bytes] = {}
    pos = 0
    while data[pos : pos + 4] == _LOCAL_SIG.to_bytes(4, "little"):
        if len(members) >= MAX_MEMBERS:
            raise CaseMalformed(None, f"more than {MAX_MEMBERS:,} members")
        if pos + _LOCAL.size > len(data):
            raise CaseMalformed(None, f"a member header at byte {pos:,} is cut off")
        fields = _LOCAL.unpack_from(data, pos)
        _, _, flags, method, _, _, crc, csize, usize, nlen, xlen = fields
        start = pos + _LOCAL.size + nlen + xlen
        try:
            name = data[pos + _LOCAL.size : pos + _LOCAL.size + nlen].decode("ascii")
        except UnicodeDecodeError:
            raise CaseMalformed(None, f"the member name at byte {pos:,} is not ASCII") from None
        if not valid_member_name(name):
            raise CaseMalformed(None, f"member name {name[:80]!r} is not in the package layout")
        if method != 0 or csize != usize or flags & 0x0001:
            raise CaseMalformed(name, "is compressed or encrypted; package members are stored")
        if csize > MAX_MEMBER_BYTES:
            raise CaseMalformed(name, f"is over {MAX_MEMBER_BYTES:,} bytes")
        if start + csize > len(data):
            raise CaseMalformed(name, "is cut off")
        if name in members:
            raise CaseMalformed(name, "occurs twice in the package")
        body = data[start : start + csize]
        if zlib.crc32(body) != crc:
            raise CaseFailed(name, "its bytes do not match the CRC-32 the ZIP records for them")
        members[name] = body
        pos = start + csize
    if not members:
        raise CaseMalformed(None, "not a case package: no ZIP member at the start")
    if write_zip(members) != data:
        raise CaseMalformed(None, "the ZIP is not in the package's canonical layout")
    return members
