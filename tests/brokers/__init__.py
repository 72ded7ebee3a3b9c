"""Private instances of standard MQTT brokers for the broker matrix: each on free loopback
ports, in a data directory of its own, stopped by its own pid (never the machine's own
services on the standard ports)."""
