"""Lease tokens name their holder; a reaper's take-over token names the delivery it recovers."""

from __future__ import annotations

from omniq.storage.lifecycle import lease_holder, lease_token, lost_delivery, take_over_token


def test_a_worker_token_names_its_worker_and_a_take_over_names_none():
    worker = lease_token("w-1")
    assert lease_holder(worker) == "w-1" and lost_delivery(worker) == worker
    first = take_over_token(worker)
    second = take_over_token(first)  # a reaper took over from a reaper that died
    assert lease_holder(first) is None and lease_holder(second) is None
    assert lost_delivery(first) == lost_delivery(second) == worker
    assert first != second
    bare = lease_token()  # no worker id: hex only, which never ends in "-r<hex>"
    assert lost_delivery(take_over_token(bare)) == bare and lease_holder(bare) is None
