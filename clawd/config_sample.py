"""The commented sample configuration that ``clawd config init`` writes.

``etc/clawd.toml`` is this text, byte for byte (a test checks it).
"""

#: written by ``clawd config init``; etc/clawd.toml is a copy. Every value shown is the
#: default (a test loads it and compares), so editing a line is all a change takes.
SAMPLE = """\
# clawd configuration (TOML).
#
# Every key is shown with its default. Commented-out keys have no default or one worked
# out at start-up. conf.d/*.toml next to this file are merged over it in name order.
# "clawd config show" prints the effective configuration; any problem stops clawd with
# exit status 78 and a list naming file, key and fix.

[broker]
# "embedded" (a private mosquitto), "mqtt://host[:port]", "mqtts://host[:port]" or "unix:///path";
# a list of urls is a broker cluster: clients move to the next node when one fails
url = "embedded"
# url = ["mqtt://node-a:1883", "mqtt://node-b:1883", "mqtt://node-c:1883"]
# MQTT version: "auto" (v5, falling back to 3.1.1 when the broker refuses v5), "5", "3.1.1"
# protocol = "auto"
# MQTT client id; unset: clawd picks one
# client_id = "clawd-worker-1"
# user name for the broker
# username = "clawd"
# file holding the broker password (mode 0600); or systemd LoadCredential=broker-password
# password_file = "/etc/clawd/broker-password"
# CA certificates to verify the broker with (mqtts:// only)
# tls_ca = "/etc/ssl/certs/ca-certificates.crt"
# client certificate (mqtts:// only; set tls_key too)
# tls_cert = "/etc/clawd/client.crt"
# key of the client certificate
# tls_key = "/etc/clawd/client.key"
# skip verifying the broker's certificate: for tests only
tls_insecure = false
# seconds between keepalive pings; a dead peer is noticed after about 1.5 times this
keepalive = 5
# first level of every clawd topic (clawd/tasks/<lane>/<type>, ...)
prefix = "clawd"

[daemon]
# what this process does: "distributor", "worker" or both
roles = ["distributor", "worker"]
# journal and state; unset: $CLAWD_STATE_DIR, /var/lib/clawd as root, else ~/.local/state/clawd
# state_dir = "/var/lib/clawd"
# directories of drop-in plugin files (*.py); must not be group- or world-writable
plugin_dirs = []
# plugins (entry-point or drop-in names) not to load
disable_plugins = []
# "debug", "info", "warning" or "error"
log_level = "info"
# largest task or result payload in bytes (1 KiB to 256 MiB)
max_payload = 262144
# "normal": the journal survives a crash or kill -9 of clawd (SQLite WAL, no fsync per
# commit); "full": an fsync per commit, so it also survives power loss (slower)
journal_sync = "normal"

[worker]
# stable id, a topic level; unset: $CLAWD_WORKER_ID, else "<short host name>-1"
# id = "worker-1"
# tasks run at the same time
concurrency = 4
# what this worker offers, matched against a task's "requires"
capabilities = []
# lanes to take tasks from; empty: all lanes
lanes = []
# seconds a stopping worker lets running tasks finish before handing them back
drain_timeout = 30.0
# concurrency autoscaling: the fewest and most tasks at the same time; unset: concurrency
# (no autoscaling). Doubled under a backlog, lowered by one when idle.
# min_concurrency = 1
# max_concurrency = 16

[distributor]
# how a worker is picked: round_robin, hash, least_loaded, fastest, or a plugin's
strategy = "round_robin"
# seconds without a worker heartbeat before its tasks are requeued
liveness_timeout = 10.0
# lane of a task that names none
default_lane = "normal"
# times the worker running a task may vanish before it is dead-lettered as poison
poison_after = 3
# seconds after a worker went offline before clawd forgets it (status, breakers, metrics)
forget_after = 3600.0

# options for the strategy, as its documentation describes
[distributor.strategy_options]

[journal]
# how long the distributor keeps a finished task (its result, and its id: a task submitted
# again with the id of one pruned is run again); seconds or "7d", "12h", "90s"; 0: for ever.
# Dead letters are kept until replayed or purged.
retention = "7d"
# several distributors sharing one PostgreSQL journal, one of them active (needs
# pip install 'clawd[postgres]'; see docs/deployment.md); unset: SQLite in state_dir
# url = "postgresql://clawd@db.example:5432/clawd"
# a leading distributor silent this long (stopped, cut off) lets a standby take over
# lock_timeout = "5s"

# Priority lanes: higher weight, larger share, and no lane starves. A [lanes.<name>]
# table adds a lane or changes the weight of a built-in one.
[lanes.high]
# share of dispatches relative to the other lanes
weight = 8

[lanes.normal]
# share of dispatches relative to the other lanes
weight = 4

[lanes.low]
# share of dispatches relative to the other lanes
weight = 1

[retry]
# tries per task, the first included, before it is dead-lettered
max_attempts = 5
# seconds: base of the exponential backoff between attempts (with full jitter)
backoff_base = 0.5
# seconds: the longest backoff between attempts
backoff_cap = 30.0

# Autoscaling (docs/scaling.md). The distributor works out how many workers the queue
# needs; the built-in local scaler starts and stops worker processes on this machine.
[scaler]
# start and stop local worker processes following the recommended worker count
enabled = false
# the fewest worker processes the local scaler keeps running
min_workers = 0
# the most worker processes the local scaler starts (workers it did not start never count)
max_workers = 4
# seconds between two changes
cooldown = 10.0
# share of the worker slots meant to be busy, above 0 and at most 1
target_utilisation = 0.8
# seconds a queued task should wait at most
max_wait = 30.0
# a worker's argv, then --worker-id <host>-scaled-<n>; empty: this clawd, run as
# "python -m clawd [-c <this config file>] run --role worker"
command = []

# The retained clawd/metrics snapshot is always published; this adds a Prometheus
# endpoint with latency histograms (pip install 'clawd[prometheus]').
[metrics]
# 0: off; else the distributor serves /metrics on this port
prometheus_port = 0
# address the endpoint listens on
prometheus_addr = "127.0.0.1"

# Circuit breakers (docs/breakers.md): one per task type and one per (worker, type),
# each over its last calls; and ejection of a worker that keeps failing.
[breakers]
# false: no breakers and no ejection
enabled = true
# calls the failure and slow-call rates are computed over (the last this many)
window = 20
# calls the window must hold before a breaker may open
minimum_calls = 10
# share of failed calls (0-1] that opens a breaker
failure_rate = 0.5
# seconds above which a call is slow; unset: duration never opens a breaker
# slow_call_seconds = 10.0
# share of slow calls (0-1] that opens a breaker
slow_call_rate = 1.0
# seconds a breaker stays open before it lets probe calls through (half-open)
open_seconds = 10.0
# probe calls a half-open breaker lets through; their outcome closes or reopens it
half_open_calls = 3
# consecutive failures (any type) after which a worker is ejected
eject_after = 5
# seconds of a first ejection; doubled for each repeat, up to 10 times this
eject_seconds = 30.0
# largest share [0-1] of the known workers ejected at once; 0: never eject
max_ejected = 0.5
# seconds a type's tasks wait while its breaker is open before they are dead-lettered
hold_seconds = 60.0

# Per task type: [breakers.types.<type>] with any key above except eject_after,
# eject_seconds and max_ejected; keys left out keep the values above.
[breakers.types]
# [breakers.types.shout]
# failure_rate = 0.2
# open_seconds = 60.0

# Settings for one task type: [handlers.<type>]
# [handlers.compute]
# enabled = true          # false: this worker does not offer the type
# timeout = 60.0          # seconds; unset: the handler's own
# max_attempts = 3        # unset: [retry] max_attempts
# rate_limit = "100/s"    # "N/s", "N/m" or "N/h": dispatches across all workers; unset: none

# An external command as task type <type>: [handlers.exec.<type>]. The task is JSON on
# stdin and in $CLAW_MESSAGE; stdout is the result. argv only, never a shell.
# [handlers.exec.shout]
# command = ["/usr/bin/tr", "a-z", "A-Z"]   # program and arguments
# timeout = 30.0                             # seconds before the process group is killed
# cwd = "/tmp"                               # working directory of the command
# env = { LC_ALL = "C" }                     # environment added for the command
# max_output = 1048576                       # bytes of output kept
# description = "upper-cases its input"      # one line about the task type

# A task submitted periodically: [schedules.<name>] with every (seconds; slots are the
# multiples of it since the epoch, UTC) or cron (5 fields, UTC), and the task envelope.
# Each slot runs once: its task id is schedule:<name>:<slot epoch seconds>.
# [schedules.nightly-report]
# cron = "30 2 * * *"                          # minute hour day-of-month month day-of-week
# task = { type = "shout", input = "report", lane = "low" }
# catch_up = "skip"    # a slot missed while clawd was down: "skip" it, or "run_once"
# [schedules.heartbeat]
# every = 300
# task = { type = "compute", input = "1+1" }
"""
