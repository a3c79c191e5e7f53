"""The read wing: open a store wherever it lives and read its records, fast and verified.

A name becomes a location (:mod:`~relabel_store.read.resolve`, the registry), a location a source
of bytes (:mod:`~relabel_store.read.sources`, the remote cache), and a source a
:class:`~relabel_store.read.reader.RelabelStore`. :func:`~relabel_store.read.api.load_relabel` does
all three. Reading imports only the format wing: it never writes a store.
"""

__all__: list[str] = []
