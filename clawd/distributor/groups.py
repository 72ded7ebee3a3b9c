"""The group table: open groups, their members' outcomes, and every ``then`` that runs.

A group is OPEN while members run, then (with a ``then``) THEN while that task runs,
then ENDED: its result is journaled as a task row (so the outbox, idempotent
resubmission, ``clawd results`` and retention treat it like any result) and the group
row leaves, in one commit. A chain is simpler: a task that ends ``ok`` with a ``then``
has that task admitted in the same commit as its own result, with the result as input;
any other end skips it. Nothing here waits for a later turn, so a crash between a
member's end and what it starts cannot happen: both are in one commit or neither is.

Members are ordinary tasks (or groups); the task table owns their states. This module
owns only what a group adds: which member ended how, and when the group ends.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from clawd import clock
from clawd.distributor.metrics import Metrics
from clawd.distributor.outbox import Outbox
from clawd.distributor.tasks import TaskTable
from clawd.envelope import Rejected, Task, decode, encode
from clawd.topics import Topics
from clawd.workflow import Group, then_task

log = logging.getLogger("clawd.distributor")

#: the ``error`` of a cancelled group's result
CANCELLED = "cancelled on request"


@dataclass
class GroupState:
    """One open group."""

    id: str
    lane: str
    members: list[str]
    then: dict[str, Any] | None
    allow_failures: bool
    submitted_at: float
    reply: list[Any] | None = None
    meta: dict[str, Any] | None = None
    #: per member: None while it runs, else its terminal status
    statuses: list[str | None] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    #: None: the then has not started (or there is none); "running"; or its end
    then_state: str | None = None
    cancelling: bool = False

    def __post_init__(self) -> None:
        self.statuses = [None] * len(self.members)
        self.results = [None] * len(self.members)
        self.index = {m: i for i, m in enumerate(self.members)}

    @property
    def done(self) -> int:
        return sum(1 for s in self.statuses if s is not None)

    @property
    def then_id(self) -> str | None:
        return None if self.then is None else str(self.then["id"])


class Groups:
    """Open groups by id; what ends a member, a then or a group goes through here."""

    def __init__(self, tasks: TaskTable, outbox: Outbox, metrics: Metrics, topics: Topics) -> None:
        self.tasks = tasks
        self.journal = tasks.journal
        self.outbox = outbox
        self.metrics = metrics
        self.topics = topics
        self.open: dict[str, GroupState] = {}
        #: member id -> its open group
        self.member_of: dict[str, str] = {}
        #: id of a group's running then -> the group
        self.then_of: dict[str, str] = {}

    # -- in --------------------------------------------------------------------------------

    def admit(self, group: Group, reply: list[Any] | None) -> None:
        """A new group: journaled with its members, which start (or are already known)."""
        self.journal.add_group(
            group.id, encode(group.doc()), encode(reply) if reply else None, group.submitted_at
        )
        st = self._open(group.doc(), reply)
        entries = self.tasks.entries
        known = self.journal.lookup_many(
            [m.id for m in group.members if m.id not in entries and m.id not in self.open]
        )
        for member in group.members:
            if member.id in entries or member.id in self.open:
                continue  # already running: it ends once, for the group too
            stored = known.get(member.id)
            if stored is not None:
                if stored[1] is not None:  # ended before: its outcome stands
                    self._record(st, member.id, stored[1])
                continue
            if isinstance(member, Task):
                self.tasks.admit(member, None)
                self.metrics.count("submitted")
            else:
                self.admit(member, None)
        self.metrics.count("groups")
        self._progress(st)
        self._settle(st)

    def load(self) -> int:
        """After a restart: every open group back, its members' outcomes from the journal."""
        rows = self.journal.open_groups()
        states = [
            self._open(decode(body), decode(reply) if reply else None) for _, body, reply in rows
        ]
        ran: list[tuple[GroupState, dict[str, Any]]] = []
        for st in states:
            ids = [m for m in st.members if m not in self.tasks.entries and m not in self.open]
            if st.then_id is not None:
                ids.append(st.then_id)
            known = self.journal.lookup_many(ids)
            for m in st.members:
                stored = known.get(m)
                if stored is not None and stored[1] is not None:
                    self._record(st, m, stored[1])
            then_id = st.then_id
            if then_id is None:
                continue
            stored = known.get(then_id)
            if then_id in self.tasks.entries or (stored is not None and stored[1] is None):
                st.then_state = "running"
                self.then_of[then_id] = st.id
            elif stored is not None and stored[1] is not None:
                ran.append((st, stored[1]))
        for st, doc in ran:
            if st.id in self.open:
                st.then_state = "running"
                self._ended_then(st, doc)
        for st in states:
            if st.id in self.open:
                self._settle(st)
        return len(states)

    def _open(self, doc: dict[str, Any], reply: list[Any] | None) -> GroupState:
        st = GroupState(
            id=doc["id"],
            lane=doc["lane"],
            members=list(doc["members"]),
            then=doc.get("then"),
            allow_failures=bool(doc.get("allow_failures")),
            submitted_at=float(doc.get("submitted_at") or 0.0),
            reply=reply,
            meta=doc.get("meta"),
        )
        self.open[st.id] = st
        for m in st.members:
            self.member_of[m] = st.id
        return st

    # -- ends ------------------------------------------------------------------------------

    def finished(self, task: Task, status: str, doc: dict[str, Any]) -> None:
        """A task ended (any way): its ``then`` starts if it succeeded, and the group it
        is a member or the ``then`` of hears of it. Same turn, same commit."""
        if status == "ok" and task.then is not None:
            self._start_then(task.then, doc.get("result"), task.id)
        self._ended(task.id, doc)

    def _ended(self, item_id: str, doc: dict[str, Any]) -> None:
        gid = self.member_of.pop(item_id, None)
        st = self.open.get(gid) if gid is not None else None
        if st is not None:
            self._record(st, item_id, doc)
            self._progress(st)
            self._settle(st)
        gid = self.then_of.pop(item_id, None)
        st = self.open.get(gid) if gid is not None else None
        if st is not None:
            self._ended_then(st, doc)

    def _record(self, st: GroupState, member: str, doc: dict[str, Any]) -> None:
        i = st.index.get(member)
        if i is None or st.statuses[i] is not None:
            return
        self.member_of.pop(member, None)
        st.statuses[i] = str(doc.get("status") or "failed")
        st.results[i] = doc.get("result") if st.statuses[i] == "ok" else None

    def _settle(self, st: GroupState) -> None:
        """Every member ended: the then starts, or the group ends."""
        if st.cancelling or st.then_state is not None or st.done < len(st.members):
            return
        bad = [m for m, s in zip(st.members, st.statuses, strict=True) if s != "ok"]
        if bad and not st.allow_failures:
            shown = ", ".join(f"{m} ({st.statuses[st.index[m]]})" for m in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            error = f"{len(bad)} member(s) did not succeed: {shown}{more}"
            self._end(st, "failed", error=error, then="skipped" if st.then else None)
            return
        if st.then is None:
            self._end(st, "ok", result=list(st.results))
            return
        st.then_state = "running"
        then_id = str(st.then_id)
        self.then_of[then_id] = st.id
        how, stored = self._start_then(st.then, list(st.results), st.id)
        if stored is not None:  # it ran before (a resubmission of a finished then id)
            self._ended_then(st, stored)
        elif how == "refused":
            self.then_of.pop(then_id, None)
            self._end(st, "failed", error=f"its then {then_id} could not start", then="failed")

    def _ended_then(self, st: GroupState, doc: dict[str, Any]) -> None:
        self.then_of.pop(str(st.then_id), None)
        status = str(doc.get("status") or "failed")
        if status == "ok":
            self._end(st, "ok", result=doc.get("result"), then=status)
        elif st.cancelling or status == "cancelled":
            self._end(st, "cancelled", error=CANCELLED, then=status)
        else:
            error = f"its then {st.then_id} ended {status}: {doc.get('error')}"
            self._end(st, "failed", error=error, then=status)

    def _start_then(
        self, then: dict[str, Any], value: Any, parent: str
    ) -> tuple[str, dict[str, Any] | None]:
        """Admit a then with its input: ``("started", None)``; a then id already open
        or that already ran is not run again: ``("open", None)`` or ``("ran", result)``;
        one that cannot start is reported on errors: ``("refused", None)``."""
        then_id = str(then["id"])
        if then_id in self.tasks.entries:
            return "open", None
        stored = self.journal.lookup_many([then_id]).get(then_id)
        if stored is not None:
            return ("open", None) if stored[1] is None else ("ran", stored[1])
        try:
            task = then_task(then, value, lanes=self.tasks.lanes.lanes)
        except Rejected as exc:
            log.warning("the then of %s could not start: %s", parent, exc.error)
            self.outbox.error(
                f"the then of {parent} could not start: {exc.error}",
                self.topics.result(parent),
                encode(then),
                then_id,
            )
            return "refused", None
        self.tasks.admit(task, None)
        self.metrics.count("submitted")
        self.metrics.count("thens")
        return "started", None

    def _end(
        self,
        st: GroupState,
        status: str,
        *,
        result: Any = msgspec.UNSET,
        error: str | None = None,
        then: str | None = None,
    ) -> dict[str, Any]:
        """The group ends: its result journaled as a task row, the group row gone, the
        result owed through the outbox, its own group (if nested) told."""
        self.open.pop(st.id, None)
        for m in st.members:
            if self.member_of.get(m) == st.id:
                del self.member_of[m]
        finished = clock.wall()
        doc: dict[str, Any] = {"id": st.id, "type": "group", "lane": st.lane, "status": status}
        if result is not msgspec.UNSET:
            doc["result"] = result
        if error is not None:
            doc["error"] = error
        doc["members"] = [
            {"id": m, "status": s or "cancelled"}
            for m, s in zip(st.members, st.statuses, strict=True)
        ]
        if st.then is not None:
            doc["then"] = {"id": st.then_id, "status": then or "skipped"}
        doc["attempts"] = 0
        doc["submitted_at"] = st.submitted_at
        doc["finished_at"] = finished
        doc["duration_ms"] = round((finished - st.submitted_at) * 1000, 3)
        if st.meta:
            doc["meta"] = st.meta
        row = Task(id=st.id, type="group", lane=st.lane, meta=st.meta, submitted_at=st.submitted_at)
        self.journal.add(row, st.reply)
        self.journal.finish(st.id, status, doc, [])
        self.journal.end_group(st.id)
        self.metrics.count(f"groups_{status}")
        self.outbox.result(doc, st.reply)
        if status == "cancelled":
            self._progress(st)  # how far it got
        log.info("group %s ended %s", st.id, status)
        self._ended(st.id, doc)
        return doc

    # -- cancel ----------------------------------------------------------------------------

    def cancel(self, group_id: str, cancel_task: Any) -> bool:
        """Cancel an open group: its running members (nested groups too) and its then,
        each through ``cancel_task(id)``; the group ends ``cancelled``."""
        st = self.open.get(group_id)
        if st is None:
            return False
        st.cancelling = True
        for m, s in zip(st.members, st.statuses, strict=True):
            if s is not None:
                continue
            if m in self.open:
                self.cancel(m, cancel_task)
            else:
                cancel_task(m)
        if st.then_state == "running" and st.then_id is not None:
            cancel_task(st.then_id)
        if st.id in self.open:
            self._end(st, "cancelled", error=CANCELLED, then="cancelled" if st.then_state else None)
        return True

    # -- views -----------------------------------------------------------------------------

    def describe(self, group_id: str) -> dict[str, Any] | None:
        """Where an open group is, for ``clawd task``."""
        st = self.open.get(group_id)
        if st is None:
            return None
        doc: dict[str, Any] = {
            "id": st.id,
            "type": "group",
            "lane": st.lane,
            "state": "then" if st.then_state == "running" else "running",
            "done": st.done,
            "total": len(st.members),
            "members": [
                {"id": m, "status": s or "open"}
                for m, s in zip(st.members, st.statuses, strict=True)
            ],
            "submitted_at": st.submitted_at,
        }
        if st.then is not None:
            doc["then"] = {"id": st.then_id, "status": st.then_state or "waiting"}
        return doc

    def _progress(self, st: GroupState) -> None:
        """Members done / total on ``progress/<group>`` (the shape of a handler's report)."""
        done, total = st.done, len(st.members)
        failed = sum(1 for s in st.statuses if s is not None and s != "ok")
        doc = {
            "id": st.id,
            "progress": round(done / total, 4) if total else 1.0,
            "message": f"{done}/{total} members done" + (f", {failed} not ok" if failed else ""),
            "done": done,
            "total": total,
            "failed": failed,
        }
        self.outbox.publish(self.topics.progress(st.id), encode(doc))
