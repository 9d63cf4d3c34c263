"""Package delivery carries a patient's records to a recipient's system and takes HL7 v2 in.

Two transports, one per kind of endpoint (``endpoints``):

- A FHIR R4 base (``https://…``) receives the patient's IPS document by conditional create,
  ``POST [base]/Bundle`` with ``If-None-Exist: identifier=<system>|<value>``, so a retry never
  makes a second copy (``fhir_push``). The endpoint authenticates us with a bearer token or by
  SMART Backend Services (``smart_client``).
- An HL7 v2 receiver (``mllp://host:port``) receives an HL7 v2.5.1 message in MLLP framing and
  answers an ACK (``mllp`` for the framing, client and server; ``ack`` for reading and writing
  acknowledgements).

Every answer is classified the same way (``result.Outcome``): delivered, retry, or permanent
failure. ``attempt`` makes one attempt over either transport and returns that verdict with the
peer's answer; ``backoff`` says when to try again and when to give up; ``messages`` builds what each
recipient receives from the adapters, byte for byte the same on every retry; ``inbound`` turns
an HL7 v2 message from a home hospital into a FHIR Bundle and an ACK.

The modules here hold no state beyond a token cache and import nothing else of the service:
queueing, consent, ledger entries, routes and the CLI are the caller's.
"""
