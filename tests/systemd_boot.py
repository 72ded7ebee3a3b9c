"""A real systemd (PID 1 of its own pid, mount, cgroup and UTS namespaces) for the tests.

The host must come out of it untouched, so before systemd starts, inside the new mount
namespace only: every mount is made private, ``/etc`` and ``/var`` are overlays whose upper
layers live in a tmpfs, and ``/var/lib``, ``/tmp`` and ``/run`` are fresh tmpfs. Every unit
that would touch the machine (tmpfiles, sysusers, sysctl, udev, journal flush, the host's
own services and everything its targets want) is masked, generators are masked, and
systemd boots straight into an empty target of ours. It is killed with SIGKILL from outside:
the namespaces, and everything in them, go with it.

Drive it with :meth:`Machine.sh` (``nsenter`` into all its namespaces).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SYSTEMD = "/lib/systemd/systemd"
TARGET = "clawd-test.target"

# Units systemd itself would start on the way to any service (sysinit.target, sockets.target,
# basic.target ...) that touch the host or need hardware. The .wants directories of the
# host's targets are masked wholesale on top of this list (see BOOT).
MASK = """
systemd-sysusers.service systemd-journal-flush.service systemd-tmpfiles-clean.timer
systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service systemd-sysctl.service
systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service
systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-remount-fs.service
systemd-fsck-root.service systemd-hwdb-update.service systemd-modules-load.service
systemd-binfmt.service proc-sys-fs-binfmt_misc.automount kmod-static-nodes.service
systemd-random-seed.service systemd-firstboot.service systemd-machine-id-commit.service
systemd-update-utmp.service systemd-update-done.service systemd-journal-catalog-update.service
ldconfig.service systemd-logind.service dbus.service dbus.socket getty.target
systemd-pstore.service systemd-timesyncd.service systemd-repart.service
systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-journald-audit.socket
systemd-initctl.socket systemd-ask-password-console.path systemd-ask-password-wall.path
dev-hugepages.mount dev-mqueue.mount sys-fs-fuse-connections.mount sys-kernel-config.mount
sys-kernel-debug.mount sys-kernel-tracing.mount tmp.mount swap.target cryptsetup.target
veritysetup.target integritysetup.target remote-fs.target mosquitto.service
"""

# Runs as PID 1 of the new namespaces (``unshare --fork``), then becomes systemd.
BOOT = r"""
set -eu
# nothing mounted below may propagate to the host: private first, before any mount
mount --make-rprivate /
# systemd writes its cgroup tree below what it sees as the root: show it the cgroup the
# caller made for it (see Machine.boot), not the top of the host's hierarchy
for tree in $CGROUP_TREES; do mount --bind "$tree/$CGROUP_NAME" "$tree"; done
mount -t tmpfs -o mode=0755 clawd-test /mnt
mkdir /mnt/etc.up /mnt/etc.work /mnt/var.up /mnt/var.work
mount -t overlay overlay -o lowerdir=/etc,upperdir=/mnt/etc.up,workdir=/mnt/etc.work /etc
mount -t overlay overlay -o lowerdir=/var,upperdir=/mnt/var.up,workdir=/mnt/var.work /var
mount -t tmpfs -o mode=0755 tmpfs /var/lib
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
# Now shared again, as systemd makes / on a real machine (it skips that in a container):
# mounts it makes for a unit, such as the credentials ramfs, must reach its own namespace.
# These peer groups are new, born private in this namespace: nothing reaches the host.
mount --make-rshared /

S=/etc/systemd/system
mask() { ln -sfn /dev/null "$S/$1"; }
# the host's own services and everything its targets pull in
for f in "$S"/* "$S"/*.wants/* /lib/systemd/system/*.wants/*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  name=$(basename "$f")
  case "$name" in
    *.wants|*.requires|*.d) ;;
    systemd-journald.service|systemd-journald.socket|systemd-journald-dev-log.socket) ;;
    *) mask "$name" ;;
  esac
done
rm -rf "$S"/*.wants "$S"/*.requires
for name in $MASK; do mask "$name"; done
# generators (fstab, sysv init scripts, getty ...) would add units of the host
mkdir -p /etc/systemd/system-generators
for g in /lib/systemd/system-generators/*; do
  ln -sfn /dev/null "/etc/systemd/system-generators/$(basename "$g")"
done
cat > "$S/$TARGET" <<EOF
[Unit]
Description=clawd test machine
DefaultDependencies=no
Wants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service
EOF
echo "$HOSTNAME_" > /etc/hostname
container=clawd-test
export container
exec "$SYSTEMD" --system --unit="$TARGET" --log-target=journal
"""


def unavailable() -> str | None:
    """Why a systemd cannot be booted here, or None when it can."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(SYSTEMD, os.X_OK):
        return f"{SYSTEMD} is not installed"
    probe = subprocess.run(
        ["unshare", "--fork", "--pid", "--mount", "--cgroup", "--uts", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"namespaces are not allowed here: {probe.stderr.strip()}"
    return None


class Machine:
    """One booted systemd. ``pid`` is its PID 1, as the host sees it."""

    def __init__(self, workdir: Path, hostname: str = "clawd-test") -> None:
        self.dir = workdir
        self.hostname = hostname
        self.log = workdir / "boot.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        #: the environment of commands run inside (see :meth:`sh`)
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER": "", "LANG": "C"}

    def boot(self, timeout: float = 60) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        script = self.dir / "boot.sh"
        script.write_text(BOOT)
        # systemd's cgroup tree goes under a cgroup of its own, removed after the kill
        name = f"clawd-test-{os.getpid()}-{id(self)}"
        trees = _cgroup_trees()
        self.cgroups = [t / name for t in trees]
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "MASK": MASK,
            "TARGET": TARGET,
            "SYSTEMD": SYSTEMD,
            "HOSTNAME_": self.hostname,
            "CGROUP_TREES": " ".join(map(str, trees)),
            "CGROUP_NAME": name,
        }
        enter = "".join(f"mkdir -p {c} && echo $$ > {c}/cgroup.procs && " for c in self.cgroups)
        unshare = "unshare --fork --pid --mount --mount-proc --cgroup --uts"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["sh", "-c", f"{enter}exec {unshare} sh {script}"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd did not boot:\n{self.log.read_text()}")
            if not self.pid:
                self.pid = self._child()
            if self.pid and self._comm() == "systemd":
                state = self.sh(f"systemctl is-active {TARGET}", check=False).stdout.strip()
                if state == "active":
                    return
            time.sleep(0.1)
        seen = self.sh(f"systemctl is-active {TARGET}", check=False) if self.pid else None
        raise RuntimeError(
            f"systemd (pid {self.pid}, {self._comm()!r}) did not reach {TARGET}: {seen}\n"
            + self.log.read_text()
        )

    def _child(self) -> int:
        """PID 1 of the namespaces: unshare's only child, once unshare runs (before, the
        wrapper shell's children are its mkdir and echo)."""
        assert self.proc is not None
        base = f"/proc/{self.proc.pid}"
        try:
            if Path(f"{base}/comm").read_text().strip() != "unshare":
                return 0
            children = Path(f"{base}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return 0
        return int(children[0]) if children else 0

    def _comm(self) -> str:
        try:
            return Path(f"/proc/{self.pid}/comm").read_text().strip()
        except OSError:
            return ""

    def sh(
        self, command: str, *, check: bool = True, timeout: float = 180, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` with ``sh -c`` inside the machine (all its namespaces)."""
        p = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-a", "sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            input=stdin,
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"inside systemd: {command!r} exited {p.returncode}\n{p.stdout}{p.stderr}"
            )
        return p

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write(self, path: str, text: str) -> None:
        """Write a file inside the machine (its /etc and /tmp are not the host's)."""
        self.sh(f'mkdir -p "$(dirname {path})" && cat > {path}', stdin=text)

    def journal(self, unit: str) -> str:
        """The unit's journal: its own lines and PID 1's about it."""
        return self.sh(f"journalctl --no-pager -o short -u {unit}", check=False).stdout

    def notifications(self, unit: str) -> list[str]:
        """What the unit sent on its notify socket, as PID 1 logged it (at debug level)."""
        pattern = re.compile(
            rf"{re.escape(unit)}(?:\.service)?: Got notification message from PID \d+ \((.*)\)$"
        )
        found = []
        for line in self.sh("journalctl --no-pager -o cat _PID=1", check=False).stdout.splitlines():
            m = pattern.search(line)
            if m:
                found.append(m.group(1).replace(", ", "\n"))
        return found

    def save_journal(self) -> None:
        """Keep the whole journal next to the boot log, for a failed run's reader."""
        if self.pid:
            out = self.sh("journalctl --no-pager -o short-precise", check=False).stdout
            (self.dir / "journal.txt").write_text(out)

    def kill(self) -> None:
        """SIGKILL systemd from outside: its namespaces and everything in them end."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        # and, should PID 1 have been missed, every process in the machine's own cgroups
        for top in getattr(self, "cgroups", []):
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for top in getattr(self, "cgroups", []):
            # deepest first; a cgroup that still holds a process stays (and says so)
            for d in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if d.is_dir():
                    _rmdir(d)
            _rmdir(top)


def _cgroup_trees() -> list[Path]:
    """The cgroup hierarchies systemd writes to: one on a unified host, two on a hybrid one."""
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        return [root]
    return [root / h for h in ("systemd", "unified") if (root / h / "cgroup.procs").exists()]


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)  # processes of a killed namespace take a moment to be reaped


def install_clawd(root: Path, scratch: Path) -> Path:
    """A virtualenv under /opt with clawd installed from ``root``, not editable.

    A unit cannot run code from /root or /home (ProtectHome=) or /tmp (PrivateTmp=), where
    the checkout and an editable install of it may live. The sources are copied first so
    the build leaves nothing in the checkout.
    """
    src = scratch / "src"
    src.mkdir()
    shutil.copytree(root / "clawd", src / "clawd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    venv = Path(f"/opt/clawd-systemd-test-{os.getpid()}")
    shutil.rmtree(venv, ignore_errors=True)
    base = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
        + ["--disable-pip-version-check", str(src)],
        check=True,
        capture_output=True,
    )
    venv.chmod(0o755)
    return venv


def remove_install(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)
