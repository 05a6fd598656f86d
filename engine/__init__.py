"""Gekko: engine."""
