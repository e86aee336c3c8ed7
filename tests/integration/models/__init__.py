"""Integration tests of runtime.models (a package, so that scope="package" fixtures end with
it: pytest 8+ treats a directory without __init__.py as part of the session)."""
