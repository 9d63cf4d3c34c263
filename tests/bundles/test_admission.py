"""Submission slots are shared: for any arrivals and departures, no client holds every slot."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.bundles.admission import Admission
from exchange.errors import MedledgerError
from exchange.http.errors import headers_of, status_of

CLIENTS = ["hospital-a", "hospital-b", "hospital-c", "hospital-d"]

# A step: a client asks for a slot (True) or gives one of its slots back (False).
steps = st.lists(st.tuples(st.sampled_from(CLIENTS), st.booleans()), max_size=200)


@given(limit=st.integers(2, 64), steps=steps)
def test_no_client_holds_more_than_half_and_a_newcomer_gets_in(
    limit: int, steps: list[tuple[str, bool]]
) -> None:
    admission = Admission(limit)
    held: dict[str, list[ExitStack]] = {c: [] for c in CLIENTS}
    for client, arrive in steps:
        if arrive:
            newcomer = not held[client]
            slot = ExitStack()
            try:
                slot.enter_context(admission.enter(client))
            except MedledgerError as e:
                assert status_of(e) == 429 and headers_of(e)["Retry-After"] == "1"
                # Refused only when every slot is taken, or when it holds its share already.
                assert admission.busy == limit or not newcomer
                continue
            held[client].append(slot)
        elif held[client]:
            held[client].pop().close()
        assert admission.busy == sum(len(s) for s in held.values()) <= limit
        assert all(len(s) <= limit // 2 for s in held.values())


def test_a_lone_client_gets_half_and_the_next_one_gets_in() -> None:
    admission = Admission(4)
    with admission.enter("hospital-a"), admission.enter("hospital-a"):
        with pytest.raises(MedledgerError) as refused, admission.enter("hospital-a"):
            pass
        assert status_of(refused.value) == 429 and "fair share" in refused.value.diagnostics
        with admission.enter("hospital-b"):
            assert admission.busy == 3
    assert admission.busy == 0
