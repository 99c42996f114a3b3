"""Decisions and device management between the HTTP layer and the devices."""
