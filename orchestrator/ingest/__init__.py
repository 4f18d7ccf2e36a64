"""The webhook bridge: LiveKit's room_started / room_finished webhooks → room events on NATS."""
