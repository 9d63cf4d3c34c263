"""``GET /v1/shl/{id}/qr.png``: a link's viewer URL as a QR code.

SHL recommends error correction level M. segno picks the smallest version that holds the
URL at that level (and does not raise the level: the payload's size is what it is).
"""

from __future__ import annotations

import io

import segno

__all__ = ["qr_png"]


def qr_png(viewer_url: str, *, scale: int = 4) -> bytes:
    """The PNG of ``viewer_url`` (``<base>/shl/view#shlink:/…``), quiet zone of 4 modules.

    The image carries the link's key: serve it only to the hospital that created the link.
    """
    code = segno.make_qr(viewer_url, error="m", boost_error=False)
    out = io.BytesIO()
    code.save(out, kind="png", scale=scale, border=4)
    return out.getvalue()
