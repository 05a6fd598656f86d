"""Gekko: models."""
