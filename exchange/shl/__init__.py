"""SMART Health Links (HL7 SHL): sharing a patient's summary by link or QR code.

``viewer`` is the page a recipient opens the link in; it decrypts and verifies in the browser.
"""
