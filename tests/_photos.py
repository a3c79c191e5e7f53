"""Real photos for tests: the sample photos relabel_store.samples exports (no downloads).

The offline lite0 annotator's whole-image top-1 is ImageNet class 285 (Egyptian cat) for chelsea
and 967 (espresso) for coffee.
"""

from relabel_store.samples import SAMPLE_PHOTOS as PHOTO_NAMES
from relabel_store.samples import sample_photo as photo_image
from relabel_store.samples import write_sample_photos as write_photos

#: ImageNet-1k class ids the lite0 annotator gives these photos (whole image, top-1).
EXPECTED_TOP1 = {"chelsea": 285, "coffee": 967}

__all__ = ["EXPECTED_TOP1", "PHOTO_NAMES", "photo_image", "write_photos"]
