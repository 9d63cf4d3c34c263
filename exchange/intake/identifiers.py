"""Patient identifiers as keys: one spelling for each identifier.

A Patient.identifier (system, value) becomes a key wherever the exchange finds a patient by it:
the vault's lookup tag, the patient index, the settlement index, `patient.identifier=`
searches, the accounting of disclosures, erasure. Two spellings that a person cannot tell
apart must be one key, or one MRN becomes two patients: one keeps data another erasure
missed, one has an accounting that leaves out the other's disclosures. So before an
identifier becomes a key, :func:`normalise` removes the characters that do not show
(Unicode general category Cf: zero-width space, zero-width (non-)joiner, word joiner,
byte order mark, soft hyphen, bidirectional marks and isolates, ...) and then puts the
rest in Unicode Normalization Form C (UAX #15), so composed and decomposed accents, and
canonically reordered marks, are one spelling.

Only canonical equivalence is applied, never compatibility folding (NFKC) or case folding:
"Ⅸ" and "IX", "ＭＲＮ" and "MRN", "a" and "A" stay different identifiers, since an issuer
may well tell them apart. The stored Bundle bytes are never changed; only keys are normalised.
"""

from __future__ import annotations

import unicodedata


def normalise_text(text: str) -> str:
    """`text` without format characters, in NFC (stripping first lets marks that an invisible
    character kept apart compose)."""
    if text.isascii():
        return text  # ASCII has no format character and is its own NFC: the common case
    visible = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFC", visible)


def normalise(identifier: tuple[str, str]) -> tuple[str, str]:
    """The one spelling of an identifier (system, value) that keys a patient."""
    system, value = identifier
    return normalise_text(system), normalise_text(value)
