"""The `switchboard` command: the composition root over orchestrator, agent_worker and devstack."""
