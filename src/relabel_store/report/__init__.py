"""The report wing: what a store will teach (``quality``) and pictures of its maps (``show``).

Reports read stores and pool their records; nothing else depends on them but the CLI.
"""

__all__: list[str] = []
