"""The pooling wing: LabelPooling, a stored label map to a soft target for one crop.

:mod:`~relabel_store.pooling.core` pools one record in numpy (the reference semantics);
:mod:`~relabel_store.pooling.batched` pools a whole batch in torch (:class:`BatchPooler`), imported
only when used, since it needs torch. Pooling depends on nothing but numpy and the errors.
"""

from relabel_store.pooling.core import (
    COMPATS,
    VARIANTS,
    Compat,
    CropBox,
    PoolingSpec,
    Region,
    Variant,
    pool,
)

__all__ = ["COMPATS", "VARIANTS", "Compat", "CropBox", "PoolingSpec", "Region", "Variant", "pool"]
