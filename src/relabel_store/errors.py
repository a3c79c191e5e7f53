"""The exceptions relabel-store raises.

Every error derives from :class:`RelabelStoreError`; most also derive from the builtin a caller
would naturally catch (a missing key is a ``KeyError``, a missing store a ``FileNotFoundError``).
Messages say what went wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AnnotatorError",
    "ArgumentTypeError",
    "ColumnNotFoundError",
    "ConfigurationError",
    "CorruptDataError",
    "FormatError",
    "ImageMismatchError",
    "IncompleteStoreError",
    "InputError",
    "InputSizeWarning",
    "InsufficientMemoryError",
    "InvalidBoxError",
    "LabelSpaceError",
    "MissingExtraError",
    "NoSignaturesWarning",
    "RecordNotFoundError",
    "RelabelStoreError",
    "RemoteError",
    "RowOutOfRangeError",
    "StoreLockedError",
    "StoreNotFoundError",
    "UnsafePathError",
    "UnsupportedTransformError",
]
import re


class RelabelStoreError(Exception):
    """Root of every error raised by relabel-store."""


class StoreNotFoundError(RelabelStoreError, FileNotFoundError):
    """No store exists at the given location."""


class FormatError(RelabelStoreError, ValueError):
    """The store's metadata is missing, malformed, or of an unsupported format version."""


class IncompleteStoreError(RelabelStoreError, RuntimeError):
    """The store was never finalized: generation is still running or was interrupted."""


class RecordNotFoundError(RelabelStoreError, KeyError):
    """A key is not in the store."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RowOutOfRangeError(RelabelStoreError, IndexError):
    """A row number is outside ``0 <= row < len(store)``."""


class CorruptDataError(RelabelStoreError, OSError):
    """Bytes on disk or from a remote do not match what the store says they should be."""


class UnsafePathError(RelabelStoreError, ValueError):
    """A path that would escape the store: named by a manifest or a remote, or a symlink (or
    another file that is not a regular file) inside a store, which is never followed."""


class AnnotatorError(RelabelStoreError, RuntimeError):
    """A model cannot be turned into a dense annotator, or its weights cannot be loaded."""


class InputError(RelabelStoreError, ValueError):
    """The data to annotate or write is unusable: no images, duplicate or malformed keys, images
    none of which could be decoded, or a store that cannot take them (other settings)."""


class InsufficientMemoryError(RelabelStoreError, MemoryError):
    """A device or the host has too little free memory for what was asked (loading every label
    map onto a GPU, say); the message says how much is needed and what to do instead."""


class StoreLockedError(RelabelStoreError, RuntimeError):
    """Another process is writing the store (it holds the store's write lock)."""


class RemoteError(RelabelStoreError, OSError):
    """A remote store cannot be reached, refused access, or is needed while offline."""


class ConfigurationError(RelabelStoreError, ValueError):
    """An argument or setting relabel-store cannot accept; the message names the fix.

    Out-of-range values (a batch size below 1, an unknown mode, arrays of the wrong shape), names
    that do not parse (a Hub URL), and settings that would train on wrong targets (a transform
    on the base dataset, a mixing setup that breaks soft targets).
    """


class ColumnNotFoundError(ConfigurationError, KeyError):
    """A column a loader was told to read is not in the dataset's batch."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ImageMismatchError(ConfigurationError):
    """A loader's image is not the image its record was made from (its content signature is
    another image's): other photos, an EXIF turn, a crop before the library, wrong keys."""


class LabelSpaceError(ConfigurationError):
    """A dataset's labels cannot be matched to the store's classes."""


class InvalidBoxError(ConfigurationError):
    """A crop box is empty, inverted or not finite."""


class ArgumentTypeError(RelabelStoreError, TypeError):
    """An argument of the wrong type; the message names the types expected."""


class UnsupportedTransformError(ArgumentTypeError):
    """A user transform whose crop box cannot be recovered."""


class MissingExtraError(RelabelStoreError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the
    ``pip install 'relabel-store[extra]'`` that provides it."""

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message, name=module)
        self.module = module
        self.extra = extra


class InputSizeWarning(UserWarning):
    """An annotator runs at an input size far from the one its weights were trained at."""


class NoSignaturesWarning(UserWarning):
    """A store holds no image signatures, so loaders cannot check images by content."""


_CREDENTIALS = re.compile(r"([A-Za-z][\w+.-]*://[^/\s:@]*):[^@\s/]*@")


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL in it replaced by
    ``***``: what every message, progress line, log line and file relabel-store writes shows of
    a URL that carries credentials (they never leave the URL they came in)."""
    return _CREDENTIALS.sub(r"\1:***@", text)
