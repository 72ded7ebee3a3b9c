"""The systemd unit files for clawd, rendered for the ``clawd`` executable actually installed.

The unit texts below are the single source of truth: they ship inside the package (no
package-data wiring needed), ``clawd systemd unit [--worker]`` prints them, and the copies
in the repository's ``systemd/`` directory are generated from them
(``python -m clawd.units systemd/``; a test keeps them identical).

Both units share one hardening block, so the distributor and workers are confined alike.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

MAIN_UNIT_NAME = "clawd.service"
WORKER_UNIT_NAME = "clawd-worker@.service"

# The path the canonical units name; render() substitutes the real one.
DEFAULT_EXECUTABLE = "/usr/bin/clawd"

_MAIN_HEAD = """\
# clawd: task-distribution daemon over MQTT.
# Install with: clawd systemd unit > /etc/systemd/system/clawd.service
# Change settings with a drop-in (systemctl edit clawd) rather than editing this file.

[Unit]
Description=clawd task-distribution daemon over MQTT
# READY waits for the broker, so start after the network is up. Wants= on mosquitto is
# harmless when the broker is remote: a missing wanted unit is ignored.
After=network-online.target mosquitto.service
Wants=network-online.target mosquitto.service
# Give up after 5 failed starts in 5 minutes: a crash loop needs a human.
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
# Only the daemon itself may report readiness or feed the watchdog, not handler processes.
NotifyAccess=main
ExecStart=/usr/bin/clawd run
# SIGHUP re-reads the configuration; the daemon reports RELOADING=1 ... READY=1. This
# command sends it and waits for the outcome, so `systemctl reload` returns once the new
# configuration runs, and fails (the old one stays) when it is invalid.
ExecReload=/usr/bin/clawd systemd reload $MAINPID
SyslogIdentifier=clawd
# READY is sent only once the broker is connected and subscriptions are acknowledged.
# While the broker is unreachable clawd waits for it (with backoff) and extends this
# timeout itself (EXTEND_TIMEOUT_USEC), so a long broker outage does not fail the start.
TimeoutStartSec=90
# The working loop pings every 15 s while it makes progress (a broker outage does not stop
# it); a wedged loop gets SIGABRT after 30 s and is restarted.
WatchdogSec=30
# A daemon that does not die of the SIGABRT (stopped, or stuck in the kernel) is killed
# 15 s later, not after TimeoutStopSec.
TimeoutAbortSec=15
Restart=on-failure
RestartSec=5
# 78 (EX_CONFIG): the configuration is invalid, and restarting cannot fix that.
RestartPreventExitStatus=78
# SIGTERM goes to the daemon only: it stops accepting tasks, drains running ones and
# stops its handler processes itself. Whatever is left at TimeoutStopSec gets SIGKILL;
# unfinished tasks are journaled and redelivered, so the timeout bounds the drain.
KillMode=mixed
TimeoutStopSec=120
Environment=PYTHONUNBUFFERED=1
# /var/lib/clawd, writable despite ProtectSystem=strict. Named explicitly because the
# dynamic user has no home directory for a per-user default.
StateDirectory=clawd
StateDirectoryMode=0700
Environment=CLAWD_STATE_DIR=%S/clawd
# /etc/clawd: clawd.toml and conf.d/ (read-only for the service).
ConfigurationDirectory=clawd
# The broker password, if the broker needs one: systemd reads the file as root and hands
# the service a private copy in $CREDENTIALS_DIRECTORY/broker-password. The file is
# optional: without it, SetCredential= supplies the default, one newline, which clawd
# reads as "no password".
LoadCredential=broker-password:/etc/clawd/broker-password
SetCredential=broker-password:\\n
"""

_WORKER_HEAD = """\
# clawd worker instance: `systemctl start clawd-worker@2` adds worker <hostname>-2.
# Install with: clawd systemd unit --worker > /etc/systemd/system/clawd-worker@.service
# Change settings with a drop-in (systemctl edit clawd-worker@.service), not by editing here.

[Unit]
Description=clawd worker %i
# Ordering only: if a local broker or distributor starts too, start after them; a worker on
# another host needs neither.
After=network-online.target mosquitto.service clawd.service
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
# The id is stable across restarts and unique per host and instance. It is also passed
# on the command line so that it wins over a [worker] id in the shared configuration.
Environment=CLAWD_WORKER_ID=%H-%i
ExecStart=/usr/bin/clawd run --role worker --worker-id ${CLAWD_WORKER_ID}
ExecReload=/usr/bin/clawd systemd reload $MAINPID
SyslogIdentifier=clawd-worker-%i
TimeoutStartSec=90
WatchdogSec=30
TimeoutAbortSec=15
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=78
KillMode=mixed
TimeoutStopSec=120
Environment=PYTHONUNBUFFERED=1
# /var/lib/clawd-worker-N, next to (not inside) /var/lib/clawd: with DynamicUser= systemd
# keeps state directories under /var/lib/private and links them, and cannot link one that
# lies inside another's. The worker keeps only its lock there.
StateDirectory=clawd-worker-%i
StateDirectoryMode=0700
Environment=CLAWD_STATE_DIR=%S/clawd-worker-%i
# The same /etc/clawd configuration and optional broker password as clawd.service.
ConfigurationDirectory=clawd
LoadCredential=broker-password:/etc/clawd/broker-password
SetCredential=broker-password:\\n
"""

_HARDENING = """
# ---- Resources -----------------------------------------------------------------------
# The kernel OOM-kills inside this unit instead of picking a victim elsewhere on the host.
# May break: large analyze/transform inputs times worker concurrency; raise in a drop-in.
MemoryMax=1G
# A handler process killed by the OOM killer fails its task; the daemon keeps running
# (the default policy would stop the whole unit). If the daemon itself dies, Restart= acts.
OOMPolicy=continue
# Bounds a fork bomb in an exec handler. May break: high worker concurrency (each handler
# process and thread counts); raise in a drop-in.
TasksMax=512

# ---- Hardening -----------------------------------------------------------------------
# Each setting: what it protects, then what it may break.
#
# A transient unprivileged user "clawd", shared with clawd-worker@ units (same User=), so
# they share /var/lib/clawd. Protects: the daemon owns nothing on the host and holds no
# root rights. May break: files the daemon reads must be world-readable or passed with
# LoadCredential=; clawd must be installed where any user can execute it (not in a home
# directory). A static "clawd" user, if one exists, is used instead.
DynamicUser=yes
User=clawd
Group=clawd
# Protects: the whole file system is read-only except the state directory, so a compromised
# daemon cannot plant code or edit configuration. May break: a state_dir outside
# /var/lib/clawd or exec handlers writing elsewhere (add ReadWritePaths=).
ProtectSystem=strict
# Protects: /home, /root and /run/user are invisible. May break: clawd or exec-handler
# scripts installed in a home directory (pipx/pyenv per-user installs), broker sockets
# under /run/user.
ProtectHome=yes
# Protects: a private /tmp, no shared-/tmp races with other services. May break: a broker
# unix socket or files exchanged with other programs through /tmp.
PrivateTmp=yes
# Protects: no access to hardware devices, only /dev/null, /dev/urandom and the like.
# May break: exec handlers using GPUs, serial ports or USB devices.
PrivateDevices=yes
# Protects: device cgroup allows only the pseudo devices above. May break: as PrivateDevices=.
DevicePolicy=closed
# Protects: mounts made by the service stay private to it. May break: nothing clawd does.
PrivateMounts=yes
# Protects: the service runs in its own user namespace; other users' files and processes
# look owned by "nobody". May break: exec-handler tools that check file ownership (ssh).
PrivateUsers=yes
# Protects: setuid binaries cannot raise privileges. May break: exec handlers calling sudo,
# su or other setuid helpers.
NoNewPrivileges=yes
# Protects: no capabilities at all, now or via exec. May break: binding ports below 1024,
# which clawd (an MQTT client) never needs.
CapabilityBoundingSet=
AmbientCapabilities=
# Protects: /proc/sys and /sys are read-only. May break: nothing clawd does.
ProtectKernelTunables=yes
# Protects: kernel modules cannot be loaded. May break: nothing clawd does.
ProtectKernelModules=yes
# Protects: the kernel log buffer is unreadable. May break: nothing clawd does.
ProtectKernelLogs=yes
# Protects: the cgroup tree is read-only. May break: handlers that manage cgroups.
ProtectControlGroups=yes
# Protects: the system clock cannot be changed. May break: nothing clawd does.
ProtectClock=yes
# Protects: the hostname cannot be changed. May break: nothing; note a hostname change is
# not seen until restart (worker ids derive from it at start anyway).
ProtectHostname=yes
# Protects: other users' processes are hidden in /proc. May break: handlers that list or
# inspect other processes.
ProtectProc=invisible
# Protects: /proc shows processes only, not kernel state. May break: reading /proc/meminfo
# or /proc/loadavg (os.getloadavg(), psutil system-wide figures, `free`, `uptime`).
ProcSubset=pid
# Protects: only unix and IP sockets. May break: netlink (interface enumeration, `ip`) and
# raw/packet sockets in exec handlers; name resolution still works.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# Protects: no new namespaces (a common kernel attack surface). May break: exec handlers
# that sandbox themselves (bwrap, firejail, unshare, containers).
RestrictNamespaces=yes
# Protects: no realtime scheduling that could starve the host. May break: nothing clawd does.
RestrictRealtime=yes
# Protects: no setuid/setgid files can be created. May break: nothing clawd does.
RestrictSUIDSGID=yes
# Protects: the execution domain (personality) is fixed. May break: nothing clawd does.
LockPersonality=yes
# Protects: no writable+executable memory, so injected code cannot be run. Fine for
# CPython without a JIT. May break: JITs in exec handlers (node, java, PyPy, LuaJIT),
# Python's experimental JIT, ctypes/cffi callbacks where libffi lacks static trampolines.
MemoryDenyWriteExecute=yes
# Protects: only the system calls a normal service needs; no privileged calls (chown,
# setuid, ...), no scheduling or priority changes. A blocked call fails with EPERM rather
# than killing the daemon. May break: handlers calling nice/setpriority, sched_setaffinity
# or chown (resource limits still work: glibc uses the allowed prlimit64).
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
# Protects: no 32-bit system call ABI (a classic filter bypass). May break: 32-bit
# binaries run by exec handlers.
SystemCallArchitectures=native
# Protects: SysV IPC objects die with the service. May break: nothing clawd does.
RemoveIPC=yes
# Protects: files the service creates are private to it. May break: other users reading
# the journal database or handler output directly (use a group-readable ReadWritePaths=).
UMask=0077
# Not set: IPAddressDeny=any with IPAddressAllow=localhost would confine the service to a
# local broker, but clawd connects to whatever broker the configuration names. With a
# fixed broker address, add both in a drop-in, e.g.:
#   IPAddressDeny=any
#   IPAddressAllow=localhost 192.0.2.10

[Install]
WantedBy=multi-user.target
"""

MAIN_UNIT = _MAIN_HEAD + _HARDENING
WORKER_UNIT = _WORKER_HEAD + _HARDENING

# ExecStart command lines to substitute: the only place the executable is named.
_EXEC_LINES = {
    False: "ExecStart=/usr/bin/clawd run\n",
    True: "ExecStart=/usr/bin/clawd run --role worker --worker-id ${CLAWD_WORKER_ID}\n",
}
_RELOAD_LINE = "ExecReload=/usr/bin/clawd systemd reload $MAINPID\n"

# Paths the unit's own sandbox hides from the service, and the setting that hides them.
_HIDDEN_PREFIXES = {
    "/home/": "ProtectHome=yes",
    "/root/": "ProtectHome=yes",
    "/run/user/": "ProtectHome=yes",
    "/tmp/": "PrivateTmp=yes",
    "/var/tmp/": "PrivateTmp=yes",
}


def hidden_by(path: str) -> str | None:
    """The unit setting that hides ``path`` from the service, or None when it is visible."""
    for prefix, setting in _HIDDEN_PREFIXES.items():
        if path.startswith(prefix):
            return setting
    return None


def hidden_paths(executable: str | None = None) -> list[str]:
    """What the service could not see of this installation: one line per problem.

    Checks the executable (as named and with symlinks resolved) and, for the installation
    running now, the interpreter and the ``clawd`` package itself (an editable install from
    a checkout in a home directory has its code there).
    """
    import clawd

    paths = [executable or find_executable()[0]]
    if executable is None:
        paths += [sys.executable, os.path.dirname(clawd.__file__)]
    problems = []
    for path in dict.fromkeys(paths + [os.path.realpath(p) for p in paths if p]):
        setting = hidden_by(path + "/")
        if setting is not None:
            problems.append(f"{path} is hidden from the service by {setting}")
    return problems


def find_executable() -> list[str]:
    """The command that starts the installed clawd, as absolute argv words.

    In order: the ``clawd`` being run now (``sys.argv[0]``), the console script next to
    this interpreter (a virtualenv's ``bin/``), ``clawd`` on ``PATH``, and finally
    ``<python> -m clawd``, which works wherever this interpreter does.
    """
    argv0 = sys.argv[0] if sys.argv else ""
    candidates = [
        argv0 if os.path.basename(argv0) == "clawd" else "",
        str(Path(sys.executable).parent / "clawd") if sys.executable else "",
        shutil.which("clawd") or "",
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return [os.path.abspath(candidate)]
    return [os.path.abspath(sys.executable), "-m", "clawd"]


def _quote(word: str, program: bool = False) -> str:
    """Quote one ExecStart word: systemd expands % specifiers everywhere, $VARS in
    arguments (not in the program path), and splits on whitespace."""
    word = word.replace("%", "%%")
    if not program:
        word = word.replace("$", "$$")
    if re.search(r"[\s\"'\\;]", word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def render(worker: bool = False, executable: str | None = None) -> str:
    """Return the text of ``clawd.service`` (or ``clawd-worker@.service`` with ``worker``).

    :param worker: render the worker template instead of the main unit.
    :param executable: absolute path of the ``clawd`` executable to run; by default the one
        installed with this package (see :func:`find_executable`). A bare name is looked up
        on ``PATH``.
    :raises ValueError: if ``executable`` is neither absolute nor found on ``PATH``.
    """
    if executable is None:
        command = find_executable()
    elif os.path.isabs(executable):
        command = [executable]
    else:
        found = shutil.which(executable)
        if found is None:
            raise ValueError(
                f"executable {executable!r} is not an absolute path and is not on PATH; "
                "pass the absolute path of the installed clawd"
            )
        command = [os.path.abspath(found)]

    text = WORKER_UNIT if worker else MAIN_UNIT
    quoted = [_quote(command[0], program=True)] + [_quote(w) for w in command[1:]]
    for old in (_EXEC_LINES[worker], _RELOAD_LINE):
        new = old.replace(DEFAULT_EXECUTABLE, " ".join(quoted), 1)
        text = text.replace(old, new, 1)
    setting = hidden_by(command[0])
    if setting is not None:
        warning = (
            f"# WARNING: {command[0]} is hidden from the service by {setting}: install\n"
            "# clawd system-wide (e.g. a virtualenv under /opt, or /usr/local).\n"
        )
        text = warning + text
    return text


def write_units(directory: Path, executable: str = DEFAULT_EXECUTABLE) -> list[Path]:
    """Write both unit files into ``directory`` and return their paths."""
    paths = []
    for worker, name in ((False, MAIN_UNIT_NAME), (True, WORKER_UNIT_NAME)):
        path = directory / name
        path.write_text(render(worker=worker, executable=executable), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    # Regenerate the repository's systemd/ copies: python -m clawd.units systemd/
    for written in write_units(Path(sys.argv[1] if len(sys.argv) > 1 else "systemd")):
        print(written)
