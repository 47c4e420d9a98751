"""The project's own exceptions: caught once in the CLI and printed as one line."""


class YolonasError(Exception):
    """Base class of every error meant for the user; the message says what is wrong and what to do."""


class DataError(YolonasError):
    """A data set, label file or image is missing or malformed."""


class CheckpointError(YolonasError):
    """A checkpoint or weights file cannot be read, or does not fit the model."""


class InputError(YolonasError):
    """An argument or input (image, path, shape, option) is not usable."""


class ImageError(DataError, InputError):
    """An image file cannot be read or decoded: a fault of a data set's files and of a command's input alike."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (from kill, timeout, a scheduler) raised as an exception, so that long work stops as on Ctrl-C (and
    a loader's worker processes end as quietly); the CLI exits 143 (128 + SIGTERM) where Ctrl-C exits 130."""
