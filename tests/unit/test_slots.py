"""ringlane_sidecar.slots: stats slots stay with their name across reloads, go back to the pool
only once no live config has the name, and a refused config takes none."""
from __future__ import annotations

import pytest

from ringlane_sidecar.slots import OutOfSlots, Slots, SlotTable


def apply(t: SlotTable, names: list[str], seq: int, oldest_live: int) -> dict[str, int]:
    """One successful compile + apply of a config naming `names`, applied as config `seq`."""
    t.oldest_live = oldest_live
    got = {n: t.slot(n) for n in names}
    t.commit(seq)
    return got


def test_a_name_keeps_its_slot_across_reloads_and_when_it_comes_back() -> None:
    t = SlotTable(8)
    first = apply(t, ["a", "b"], 1, 0)
    assert apply(t, ["b", "c"], 2, 1)["b"] == first["b"]
    assert apply(t, ["a", "b", "c"], 3, 1)["a"] == first["a"]  # retired, not reused: the same slot
    assert t.retired == {}


def test_full_table_reuses_only_names_no_live_config_has() -> None:
    t = SlotTable(2)
    apply(t, ["a"], 1, 0)
    apply(t, ["b"], 2, 1)  # a retired as of config 2
    t.oldest_live = 1  # a connection still serves config 1, which has a
    with pytest.raises(OutOfSlots, match="more than 2 names in use"):
        t.slot("c")
    t.named.clear()
    got = apply(t, ["b", "c"], 3, 2)  # config 1 is gone: a's slot goes to c
    assert got["c"] == 0 and t.recycled == [] and "a" not in t.slots


def test_the_longest_gone_name_is_reused_first() -> None:
    t = SlotTable(3)
    apply(t, ["a", "b", "c"], 1, 0)
    apply(t, ["b", "c"], 2, 1)  # a gone as of 2
    apply(t, ["c"], 3, 2)  # b gone as of 3
    t.oldest_live = 3
    assert t.slot("d") == 0 and t.recycled == [0]


def test_names_are_reported_until_their_slot_goes_to_another() -> None:
    """A retired name keeps its series (its last values) after no config has it: a request
    that finished on the old config just before it was let go is then counted in some scrape."""
    t = SlotTable(2)
    apply(t, ["a", "b"], 1, 0)
    apply(t, ["b"], 2, 1)
    assert t.names() == {0: "a", 1: "b"}
    apply(t, ["b", "c"], 3, 2)  # config 1 let go: a's slot goes to c
    assert t.names() == {0: "c", 1: "b"}


def test_refused_config_gives_back_its_slots_and_recycling() -> None:
    s = Slots.new(1)
    s.begin(oldest_live=0)
    s.rules.slot("a")
    s.commit(1)
    s.begin(oldest_live=1)
    s.commit(2)  # a config without a: a retired as of 2
    saved = s.begin(oldest_live=2)
    s.rules.slot("b")  # takes a's slot; then the core refuses the config
    assert s.recycled() == [(1, 0)]
    s.restore(saved)
    assert s.rules.slots == {"a": 0} and s.rules.retired == {"a": 2} and s.recycled() == []


def test_a_name_back_in_the_config_keeps_its_slot_from_a_new_name_beside_it() -> None:
    """Table full; b left and comes back in the config that also brings c: c must not take
    b's slot (b, still retired until the commit, looked free), else both count into one slot
    and b is no longer reported."""
    t = SlotTable(2)
    apply(t, ["a", "b"], 1, 0)
    apply(t, ["a"], 2, 1)  # b retired as of config 2
    t.oldest_live = 2
    assert t.slot("a") == 0 and t.slot("b") == 1
    with pytest.raises(OutOfSlots):
        t.slot("c")


def test_the_config_check_knows_the_cores_table_size() -> None:
    """semantic.py refuses configs with more names than a table holds, without loading the core."""
    from ringlane_sidecar.native import load
    from ringlane_sidecar.slots import SLOTS_PER_TABLE

    _, lib = load()
    assert SLOTS_PER_TABLE == lib.RL_MAX_SLOTS
