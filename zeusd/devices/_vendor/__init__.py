"""Third-party code shipped inside zeusd; see README.md here. Only nvml.py imports it."""
