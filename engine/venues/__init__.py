"""Gekko: engine/venues."""
