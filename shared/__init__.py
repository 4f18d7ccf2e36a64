"""Wire contract and plumbing shared by the orchestrator and the agent workers.

No business logic lives here: message models, subject names, settings, trace-context
propagation and logging setup.
"""
