"""The publish wing: ``push`` a finalized store to the Hub or any fsspec URL, with its card.

One plan (:mod:`~relabel_store.publish.push`), one dataset card (:mod:`~relabel_store.publish.card`),
one module per destination (:mod:`~relabel_store.publish.destinations`). Publishing reads stores
and never writes one.
"""

__all__: list[str] = []
