"""Stores: where tracked messages live between send, confirm and report.

Pick one by URL with :func:`store_from_url`, or pass any object implementing
:class:`Store`.
"""

from __future__ import annotations

from .base import (
    ERROR_MESSAGE_LENGTH,
    REQUIRED_METHODS,
    AdminStore,
    AsyncStore,
    AsyncStores,
    BaseStore,
    HealthStore,
    InsightsStore,
    Store,
    StoreFactory,
    ThreadedAsyncStore,
    as_async_store,
    check_store,
    clip_error_message,
    register_store,
    registered_schemes,
    store_from_url,
)

__all__ = [
    "ERROR_MESSAGE_LENGTH",
    "REQUIRED_METHODS",
    "AdminStore",
    "AsyncStore",
    "AsyncStores",
    "BaseStore",
    "HealthStore",
    "InsightsStore",
    "Store",
    "StoreFactory",
    "ThreadedAsyncStore",
    "as_async_store",
    "check_store",
    "clip_error_message",
    "register_store",
    "registered_schemes",
    "store_from_url",
]
