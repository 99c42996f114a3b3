"""Transport layer: sockets, systemd activation, peer credentials, waitress."""
