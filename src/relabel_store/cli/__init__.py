"""The ``relabel-store`` command line: one module per command group, a thin shell over the API."""

__all__: list[str] = []
