"""Gekko: perf."""
