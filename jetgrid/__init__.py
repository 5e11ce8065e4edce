"""jetgrid: a GPU job broker for ML inference, event-sourced on NATS JetStream.

``jetgrid.remote`` (from jetgrid/functions.py) is the client SDK for remote Python functions.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["RemoteError", "RemoteJobFailed", "RemoteResult", "remote"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so the CLI does not pay for cloudpickle and the SDK's imports.
    if name in __all__:
        from jetgrid import functions

        return getattr(functions, name)
    raise AttributeError(f"module 'jetgrid' has no attribute {name!r}")
