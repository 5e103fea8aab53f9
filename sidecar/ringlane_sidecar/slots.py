"""Stats slots: the small integers the C core's per-worker counters are indexed by, one per
listener, rule and cluster name (4096 of each).

A name keeps its slot while configs name it, so its counters carry across reloads. A name that
leaves the config is retired as of the first config without it; once no live config has it
(every worker let go of the older configs: rl_core_oldest_seq), its slot may go to a new name,
zeroed first. Until then it is reported with its last values: a request that finished on an
old config just before the config was let go is counted in some scrape (a series that vanished
at once would have lost it). Configs are counted in the order the core applied them
(rl_core_applied_seq), not by their generation, which is the operator's. Without that, a sidecar whose
routes come and go would run out of slots and refuse every config after.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

TABLES = ("listeners", "rules", "clusters")  # the core's table numbers, in order
SLOTS_PER_TABLE = 4096  # RL_MAX_SLOTS (rl_stats.h), for checks that run without the core


class OutOfSlots(Exception):
    """More names in use at once than a stats table holds."""


@dataclass
class SlotTable:
    capacity: int
    slots: dict[str, int] = field(default_factory=dict)  # every name with a slot, retired ones too
    retired: dict[str, int] = field(default_factory=dict)  # name -> seq of the first config without it
    handed_out: int = 0  # slots 0..handed_out-1 have been given out at least once
    oldest_live: int = 0  # seq of the oldest config a worker holds, for the compile under way
    named: set[str] = field(default_factory=set)  # names the config under way uses
    recycled: list[int] = field(default_factory=list)  # slots it took from unused names

    def slot(self, name: str) -> int:
        self.named.add(name)
        if name not in self.slots:
            if self.handed_out < self.capacity:
                self.slots[name] = self.handed_out
                self.handed_out += 1
            else:
                self.slots[name] = self._recycle(name)
        return self.slots[name]

    def _recycle(self, name: str) -> int:
        # Not a name that comes back in this very config: it has its slot again already.
        unused = [n for n, gone_at in self.retired.items() if n not in self.named and self.unused(gone_at)]
        if not unused:
            raise OutOfSlots(f"more than {self.capacity} names in use (in this config, or still counted by "
                             f"connections that began on an older one): {name!r}")
        oldest = min(unused, key=self.retired.__getitem__)
        del self.retired[oldest]
        slot = self.slots.pop(oldest)
        self.recycled.append(slot)
        return slot

    def unused(self, gone_at: int) -> bool:
        """No live config has a name retired as of config gone_at."""
        return gone_at <= self.oldest_live

    def commit(self, seq: int) -> None:
        """The config under way is live as config seq: names it left out are retired as of it."""
        for name in self.slots:
            if name in self.named:
                self.retired.pop(name, None)
            else:
                self.retired.setdefault(name, seq)
        self.named.clear()
        self.recycled.clear()

    def names(self) -> dict[int, str]:
        """Slot -> name of the names to report: every name that has a slot (see above)."""
        return {s: n for n, s in self.slots.items()}


@dataclass
class Slots:
    listeners: SlotTable
    rules: SlotTable
    clusters: SlotTable

    @classmethod
    def new(cls, capacity: int) -> "Slots":
        return cls(SlotTable(capacity), SlotTable(capacity), SlotTable(capacity))

    def tables(self) -> tuple[SlotTable, SlotTable, SlotTable]:
        return self.listeners, self.rules, self.clusters

    def begin(self, oldest_live: int) -> "Slots":
        """Before compiling a config: returns the state to restore if the core refuses it, so
        names only a refused config used take no slot (and show as no series)."""
        saved = copy.deepcopy(self)
        for t in self.tables():
            t.oldest_live = oldest_live
            t.named.clear()
            t.recycled.clear()
        return saved

    def recycled(self) -> list[tuple[int, int]]:
        """(table number, slot) of the slots the compiled config took from unused names: they
        are zeroed before the core gets it."""
        return [(i, s) for i, t in enumerate(self.tables()) for s in t.recycled]

    def commit(self, seq: int) -> None:
        for t in self.tables():
            t.commit(seq)

    def restore(self, saved: "Slots") -> None:
        self.listeners, self.rules, self.clusters = saved.listeners, saved.rules, saved.clusters
