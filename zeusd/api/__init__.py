"""HTTP layer: Falcon resources. Never imports pynvml; holds services, not devices."""
