"""ICH E2B(R3) individual case safety reports for the foreign marketing-authorisation holder.

From each AdverseEvent of an RWD Bundle and its suspect Medication, one ICSR message
(``PORR_IN049016UV``) in an ICH batch (``MCCI_IN200100UV01``), following the ICH E2B(R3)
Implementation Guide (the data element numbers are cited beside each element):

- the reaction as the primary source reported it, verbatim in its language (E.i.1.1a/b), and
  its English translation when the Bundle carries one (E.i.1.2, from the FHIR translation
  extension on ``AdverseEvent.event.text``); a MedDRA code (E.i.2.1a/b) only when the Bundle
  gives one -- no MedDRA tables are shipped, so none is looked up;
- the country where it happened, China (E.i.9), and the reporter's country (C.2.r.3);
- the suspect drug as it was obtained abroad (G.k.2.2, G.k.2.4) with its foreign
  authorisation number, country and holder (G.k.3.1-3) and the batch (G.k.4.r.7); the pack's
  GS1 code and the pilot zone's import approval go in G.k.11 so the holder can trace it.

Personal data is minimised for a transfer abroad: the patient's name and the reporter's
name are sent as masked (nullFlavor ``MSK``); sex and age at onset are sent because causality
assessment needs them. The output is deterministic: the same Bundle, clock and ids give the
same bytes (element order fixed, no random ids: the HL7 instance UUIDs are name-based).

By job: ``case`` reads the case from the Bundle and ``drug`` its suspect drugs (and writes
G.k); ``batch`` writes the batch and message headers, the case and the patient; ``reaction``
writes E.i; ``elements`` holds the XML pieces they share.

:func:`icsr_for_bundle` is the whole of the service's ``$e2b``: it needs nothing but the stored
Bundle's bytes and the clock, finds the parties in the Bundle as the CLI does, and derives the
batch number from the bytes and the time (:func:`batch_number`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.base import AdaptError, AdaptOptions
from adapters.e2b.batch import write_batch
from adapters.e2b.case import Case, holder_ids, read_cases, sender_ids
from adapters.ips_json import loads_bundle
from adapters.trace_fhir import BundleView

__all__ = ["Icsr", "adapt", "batch_number", "build_icsr", "icsr_for_bundle"]


def build_icsr(
    bundle: Mapping[str, Any],
    *,
    now: datetime,
    message_id: str,
    sender_id: str,
    receiver_id: str,
) -> bytes:
    """An ICH ICSR batch (MCCI_IN200100UV01, UTF-8 XML) for the AdverseEvents of ``bundle``.

    ``message_id`` is the batch number (N.1.2); ``sender_id`` and ``receiver_id`` the batch
    and message sender and receiver (N.1.3/N.1.4, N.2.r.2/N.2.r.3), agreed with the holder;
    ``now`` the transmission and creation time (N.1.5, N.2.r.4, C.1.2).
    """
    return write_batch(read_cases(bundle, "bundle"), now, message_id, sender_id, receiver_id)


@dataclass(frozen=True)
class Icsr:
    """An ICSR batch and what it was addressed with (no patient data: ids of the parties)."""

    xml: bytes
    batch_number: str
    sender: str
    receiver: str
    cases: int


def icsr_for_bundle(data: bytes, *, now: datetime, batch: str | None = None) -> Icsr:
    """The ICSR batch of one stored adverse-event Bundle, from its bytes and the clock.

    The Bundle is read with the strict reader; its suspect product's marketing-authorisation
    holder is the receiver and the hospital the sender (as ``medledger adapt e2b`` finds
    them); ``batch`` is the batch number, by default :func:`batch_number` of the bytes and
    ``now``, so each transmission has its own and the same request renders the same bytes.
    AdaptError (the caller's 422) names what the Bundle lacks: an AdverseEvent, a holder, the
    reaction as reported.
    """
    number = batch or batch_number([data], now)
    cases, sender, receiver = _read([data])
    return Icsr(
        write_batch(cases, now, number, sender, receiver), number, sender, receiver, len(cases)
    )


def batch_number(inputs: Sequence[bytes], now: datetime | None = None) -> str:
    """A batch number (N.1.2) derived from what the batch is made of and when it is sent.

    ``MEDLEDGER-`` and 16 hex digits of SHA-256 over the length-prefixed inputs and, when
    given, ``now`` (RFC 3339): offline the same files give the same number; a service that
    sends the same Bundle again later gives the new transmission a new one.
    """
    digest = hashlib.sha256()
    for data in inputs:
        digest.update(len(data).to_bytes(8, "big") + data)
    if now is not None:
        digest.update(now.isoformat().encode("ascii"))
    return "MEDLEDGER-" + digest.hexdigest()[:16].upper()


def adapt(bundles: list[bytes], options: AdaptOptions) -> bytes:
    """``medledger adapt e2b``: one batch for the AdverseEvents of all files.

    The receiver is the suspect product's marketing-authorisation holder (its Organization
    identifier, else name) and the sender the reporting hospital; ``--control-id`` is the
    batch number, else :func:`batch_number` of the input bytes.
    """
    cases, sender, receiver = _read(bundles)
    batch = options.control_id or batch_number(bundles)
    return write_batch(cases, options.now, batch, sender, receiver)


def _read(bundles: Sequence[bytes]) -> tuple[list[Case], str, str]:
    """The cases of the inputs, the one sender and the one receiver they name."""
    cases: list[Case] = []
    receivers: set[str] = set()
    senders: set[str] = set()
    for n, data in enumerate(bundles):
        doc = loads_bundle(data, f"input {n + 1}")
        cases.extend(read_cases(doc, f"input {n + 1}"))
        view = BundleView(doc)
        receivers.update(holder_ids(view))
        senders.update(sender_ids(view))
    if len(receivers) != 1:
        raise AdaptError(
            "a batch goes to one marketing-authorisation holder; the inputs name "
            f"{len(receivers) or 'no'} holders ({', '.join(sorted(receivers))})"
        )
    if len(senders) != 1:
        raise AdaptError(
            "the sender is the hospital: give exactly one Organization that manages the "
            "Location (or a single non-holder Organization)"
        )
    return cases, senders.pop(), receivers.pop()
