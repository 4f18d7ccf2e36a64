"""Real nats-server and livekit-server processes on loopback, for `switchboard dev` and the tests."""
