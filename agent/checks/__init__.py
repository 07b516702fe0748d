"""The checks: what each one declares, and the code that collects it on a machine.

Two registries, kept apart so that the collector (server/) and the policy package never load a probe:

* agent/checks/specs.py — the declarations (`CheckSpec` by id), from agent/checks/<family>/spec.py,
  built from the types in agent/checks/declarations.py; they import nothing of probes or collectors.
* agent/checks/collectors.py — the agent's collector registry (`REGISTRY`, `collect`): each family's
  declaration with its linux/darwin/windows collectors, and the Windows PowerShell batch.

This package and every family package import nothing, so loading a declaration loads nothing else.
"""
