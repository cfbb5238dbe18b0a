"""The agent bridge: the client of the WAPT agent API, and Comptoir's own agent (agent_bridge.agent)."""  # noqa: E501
