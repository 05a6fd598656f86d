"""Gekko: ops."""
