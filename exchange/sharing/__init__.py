"""SMART Health Links a hospital made: the summary each shares, its stored row, its files.

``links`` gathers a patient's record Bundles, appends the summary built from them
(exchange.shl.files) like any submission with the link's row in the same transaction, and
reads, counts down and revokes links. What the routes answer is exchange.shl.manifest's; the
access entries are exchange.privacy's, recorded by the routes.
"""
