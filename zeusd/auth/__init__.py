"""Bearer-token authentication (HS256 JWT), as upstream zeusd's --signing-key-path."""
