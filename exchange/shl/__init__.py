"""SMART Health Links (HL7 SHL): sharing a patient's summary by link or QR code.

``viewer`` is the page a recipient opens the link in; it decrypts and verifies in the browser.
The sharing side is a library the routes call: ``link`` (the request, the link's state and
its columns), ``payload`` (``shlink:/`` and viewer URLs), ``files`` (the summary, its
Provenance, compact JWE), ``manifest`` (what the public routes answer and record) and ``qr``.
"""
