"""A session's causal token covers all of its writes: tokens name partitions (REGION:v2.<p>-<ms>-<seq>...),
so a session that wrote two entities keeps both partitions, each at its later id."""

from __future__ import annotations

from client._tokens import merged_token


def test_a_session_token_keeps_every_partition_its_writes_touched() -> None:
    t = merged_token(None, "r1:v2.3-100-0")
    t = merged_token(t, "r1:v2.7-90-1")
    assert t == "r1:v2.3-100-0.7-90-1"
    assert merged_token(t, "r1:v2.3-99-5.7-90-2") == "r1:v2.3-100-0.7-90-2"  # each partition at its later id


def test_another_region_or_an_unknown_form_replaces_it() -> None:
    assert merged_token("r1:v2.3-100-0", "r2:v2.5-1-0") == "r2:v2.5-1-0"
    assert merged_token("r1:1-0", "r1:v2.5-1-0") == "r1:v2.5-1-0"
    assert merged_token("r1:v2.3-100-0", "r1:later") == "r1:later"
