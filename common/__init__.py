"""Small helpers that the agent, the collector and the gate all use.

Nothing here imports from ``agent``, ``server`` or ``gate``: each of them may import this package without
pulling in another part (the collector must not load the agent's probes or service, the gate runs without
the collector's dependencies). Keep it to the standard library.
"""
