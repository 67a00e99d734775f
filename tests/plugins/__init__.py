"""Plug-in code for tests: loaded by chatops the way a user's own package is (a dotted path in stages.yaml)."""
