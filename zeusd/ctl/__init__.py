"""zeusctl: the command-line client of zeusd (standard library only, so the .deb needs nothing more)."""
