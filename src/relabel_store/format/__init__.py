"""The format wing: what a store is on disk, and nothing about where its bytes travel.

The metadata schema (:mod:`~relabel_store.format.metadata`), the checksum manifest
(:mod:`~relabel_store.format.manifest`), the Zarr v3 layout and its codecs (``_layout``,
``_shards``), store keys and label spaces, and the file primitives (``_io``, ``_lock``) every other
wing uses. It imports no other wing.
"""

__all__: list[str] = []
