"""mxsend: outbound e-mail delivery for Python, built on Twisted.

The protocol core lives in :mod:`mxsend.protocol` and imports no I/O library, so importing
this package stays light; the Twisted shell is imported only where it is used.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
