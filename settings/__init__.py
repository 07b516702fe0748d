"""The one settings loader of the agent, the collector and the gate (see settings.loader)."""
