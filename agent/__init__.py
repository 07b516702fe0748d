"""Teleposture agent: checks a laptop against a signed telework security policy."""

__version__ = "0.1.0"
