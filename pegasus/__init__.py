"""Pegasus: run a list of shell commands on a set of SSH nodes."""

__version__ = "0.1.0"
