"""Exceptions a user can cause. Each message says what is wrong and how to fix it."""


class CftClipError(Exception):
    """Base class: an error caused by input, configuration or environment, not by a bug."""


class DataError(CftClipError):
    """A dataset table is unreadable or has invalid rows."""


class ImageError(CftClipError):
    """An image cannot be loaded safely (missing, corrupt, too large, not an image)."""


class FetchError(CftClipError):
    """An image URL cannot be downloaded (timeout, refused address, too large, not an image)."""


class ModelError(CftClipError):
    """A model cannot be loaded (unknown id, offline, broken directory)."""


class EvaluationError(CftClipError):
    """Scores or labels cannot be evaluated as asked (missing labels, bad threshold strategy)."""


class MediaMissingError(ImageError):
    """A file expected in the content-addressed media store is not there."""


class ConfigError(CftClipError):
    """A configuration value is out of range or inconsistent with another one."""


class TrainingError(CftClipError):
    """A training step cannot run as asked (mismatched or empty batches, missing process group)."""


class CounterfactualError(CftClipError):
    """Counterfactual texts cannot be generated as asked (bad name pool, scorer output, tagger spans)."""


class StorageError(CftClipError):
    """A file cannot be written: the disk is full, over its quota, read-only, or the folder not writable."""
