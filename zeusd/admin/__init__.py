"""Tools for the administrator of a GPU node: `zeusd doctor` and what it checks."""
