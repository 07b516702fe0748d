"""Disk encryption: the check's declaration and its collectors.

spec.py declares the facts (and parameters); linux.py, darwin.py and windows.py collect them. This
package imports nothing itself: the collector (server/) loads spec.py alone, and the agent's collector
registry (agent/checks/collectors.py) loads the platform modules.
"""
