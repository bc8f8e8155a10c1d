"""Exceptions raised by tvm_dse: each names what is wrong and what is accepted instead."""


class TvmDseError(Exception):
    """Base class of every error tvm_dse raises on purpose."""


class TargetError(TvmDseError, ValueError):
    """A target string, dict or preset that cannot be turned into a TVM target."""


class ModelError(TvmDseError, ValueError):
    """A model that cannot be imported: malformed, dynamic without an override, or badly bound."""


class UnsupportedOpError(ModelError):
    """A model that uses an operator tvm_dse cannot import or lower."""
