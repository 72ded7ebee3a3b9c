"""The distributor's side of periodic schedules: look at the clock, submit due slots.

Each look (every tick of the loop) decides per schedule whether a new slot came due
(:func:`clawd.schedule.decide`); a firing is an ordinary submission with a deterministic
id, handed to admission, so the id dedupe stops a second run of the same slot. The last
slot of each schedule is journaled in the same commit as the task it fired.
"""

from __future__ import annotations

import logging
from typing import Any

from clawd import schedule
from clawd.distributor.admission import Admission
from clawd.envelope import Rejected
from clawd.journal import Journal

log = logging.getLogger("clawd.distributor")


class Schedules:
    """Fires ``[schedules.<name>]``. ``configure`` again after a reload."""

    def __init__(self, config: Any, journal: Journal, admission: Admission) -> None:
        self.journal = journal
        self.admission = admission
        self.last: dict[str, float] = journal.schedule_slots()
        self.configure(config)

    def configure(self, config: Any) -> None:
        self.schedules: dict[str, schedule.ScheduleConfig] = dict(config.schedules)
        self.default_lane: str = config.distributor.default_lane

    def tick(self, now: float) -> int:
        """Fire what came due; how many fired."""
        fired = 0
        lanes = self.admission.tasks.lanes.lanes
        for name, sc in self.schedules.items():
            last = self.last.get(name)
            slot, fire = schedule.decide(sc, now, last)
            if slot is None:
                continue
            self.last[name] = slot
            self.journal.schedule_slot(name, slot)
            if not fire:
                if last is not None:
                    log.info("schedule %s: slot %d was missed; skipped (catch_up)", name, slot)
                continue
            try:
                task = schedule.build(sc, name, slot, lanes=lanes, default_lane=self.default_lane)
            except Rejected as exc:  # a lane removed by a reload, say
                log.warning("schedule %s: slot %d not submitted: %s", name, slot, exc.error)
                continue
            task.submitted_at = now
            self.admission.pending.append((task, None, True))
            fired += 1
        return fired
