"""A deterministic simulator of the room controller (in the manner of FoundationDB's simulation
and TigerBeetle's VOPR): N replicas of the real controller on one virtual-time event loop, against
seeded stand-ins for NATS KV, JetStream, LiveKit and the worker pools, with faults, invariants
checked after every step, and exact replay of a seed (``python -m tests.sim --seed N``).
See tests/sim/README.md."""
