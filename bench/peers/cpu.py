"""CPU seconds of process trees from /proc, for the peers' CPU per task.

``BENCH_CPU_PIDS`` names the roots by role (``broker=12,34;workers=56``); every process
below a root counts for its role, and so do its reaped children (``cutime``/``cstime``:
RQ's work horses live one job each).
"""

import os

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(roots):
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(name)
            if fields:
                parent[int(name)] = int(fields[1])
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(child for child, ppid in parent.items() if ppid == pid)
    return out


def seconds(pids):
    total = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:  # utime stime cutime cstime
            total += sum(int(x) for x in fields[11:15])
    return total / TICK


def roles():
    """{role: [root pid, ...]} from BENCH_CPU_PIDS."""
    out = {}
    for part in os.environ.get("BENCH_CPU_PIDS", "").split(";"):
        if "=" in part:
            role, pids = part.split("=", 1)
            out[role] = [int(p) for p in pids.split(",") if p]
    return out


class Meter:
    """CPU of every role's tree and of this process over one measured stretch."""

    def __init__(self):
        self.roots = roles()

    def start(self):
        self.trees = {role: descendants(r) for role, r in self.roots.items()}
        self.before = {role: seconds(t) for role, t in self.trees.items()}
        self.mine = os.times()

    def stop(self, tasks):
        """CPU µs per task by role ("producer" is this process) and their total."""
        used = {}
        for role, roots in self.roots.items():
            tree = self.trees[role] | descendants(roots)
            used[role] = seconds(tree) - self.before[role]
        now = os.times()
        used["producer"] = (now.user - self.mine.user) + (now.system - self.mine.system)
        us = {role: v / tasks * 1e6 for role, v in used.items()}
        us["total"] = sum(us.values())
        return us
