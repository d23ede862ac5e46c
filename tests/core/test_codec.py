"""Log entries round-trip through the storage record codec."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from planaria.core.codec import decode_entry, encode_entry
from planaria.core.messages import Delete, Entry, Rename, Set

ops = st.one_of(
    st.builds(
        Set,
        st.binary(max_size=20),
        st.binary(max_size=20),
        nx=st.booleans(),
        xx=st.booleans(),
        if_value=st.none() | st.binary(max_size=20),
    ),
    st.builds(Delete, st.binary(max_size=20)),
    st.builds(Rename, st.binary(max_size=20), st.binary(max_size=20), nx=st.booleans()),
)


@settings(max_examples=200)
@given(
    epoch=st.integers(1, 2**32),
    index=st.integers(1, 2**32),
    client=st.text(max_size=10),
    seq=st.integers(0, 2**63),
    op=ops,
)
def test_write_entries_round_trip(
    epoch: int, index: int, client: str, seq: int, op: Set | Delete
) -> None:
    entry = Entry(epoch, index, (client, seq), op)
    assert decode_entry(epoch, index, encode_entry(entry)) == entry


def test_a_barrier_is_the_empty_record() -> None:
    barrier = Entry(3, 7, None, None)
    assert encode_entry(barrier) == b""
    assert decode_entry(3, 7, b"") == barrier
