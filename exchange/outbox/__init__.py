"""Package outbox delivers patients' records to their home hospitals, and proves each delivery.

It stands on the transports of :mod:`exchange.delivery` and decides what they carry, to whom
and when:

- ``endpoints``: where each recipient receives deliveries, its credentials sealed.
- ``queue``: the rule (a ``record`` Bundle version, a recipient with an endpoint, the
  patient's current consent permitting it for treatment, a legal basis for a transfer
  abroad), the outbox rows it writes in the submission's transaction or by hand, and the
  listing.
- ``worker``: sends due deliveries on the backoff schedule, re-checking consent and passing
  the cross-border gate at the moment the bytes leave; a final outcome is a ledger entry of
  kind ``delivery`` and an access entry in the patient's accounting (``proof``).

The outbox is a table (``exchange_deliveries``): its rows are the whole state, so a delivery
survives a restart and every retry sends the same bytes under the same identifier.
"""
