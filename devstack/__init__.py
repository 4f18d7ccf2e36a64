"""The dev/test kit: real servers and Switchboard processes on loopback, for `switchboard dev`, the
tests and the bench — nats-server, livekit-server and Jaeger launchers, worker and orchestrator
subprocesses, stand-in pools that heartbeat, and a room listener that measures the agents' audio.

It never imports tests/ or bench/: they build on it.
"""
