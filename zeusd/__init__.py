"""zeusd: a privileged GPU-control daemon serving the Zeus zeusd HTTP API."""

__version__ = "0.2.0"
API_VERSION = "0.5"
