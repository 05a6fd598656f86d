"""Gekko: shm."""
