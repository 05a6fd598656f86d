"""Gekko: engine/strategies."""
