"""An agent shaped like one with a provider avatar (``--entrypoint tests.agents.avatar_agent:entrypoint``).

Avatar plugins (Hedra, Tavus, bey, LiveKit inference avatars) send the agent's speech to the
provider's participant, which publishes it ``lk.publish_on_behalf`` of the agent; the agent
publishes no audio of its own. This one publishes nothing at all, and the tests play the avatar.
It subscribes to nothing either, so the worker has to subscribe the agent to its avatar's audio
itself to measure it.
"""

from __future__ import annotations

from livekit.agents import AutoSubscribe, JobContext


async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)
