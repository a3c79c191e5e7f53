"""The write wing: make stores, from images (``generate``) or from published maps (``import``).

:class:`~relabel_store.write.writer.StoreWriter` writes and seals a store shard by shard;
``generate`` runs an annotator (``annotator``, ``weights``, ``inputs``) over a dataset,
``importer`` decodes the official ReLabel and TokenLabeling releases. Writing may read (a parent
store's lineage, ``refinery``) and pool (an import's rounding figure); reading never writes.
"""

__all__: list[str] = []
