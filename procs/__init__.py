"""Gekko: procs."""
