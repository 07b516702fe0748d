"""Updates: the declaration (spec.py) and the per-platform collectors (linux.py, darwin.py, windows.py).

This package imports nothing itself: the collector (server/) loads spec.py alone, and the agent's
collector registry (agent/checks/collectors.py) loads the platform modules.
"""
