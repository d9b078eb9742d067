"""The example apps import as an app's own tests import them: from the app's directory."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(autouse=True, scope="module")
def _root_logger_as_found() -> Iterator[None]:
    """A Litestar app configures the root logger when it starts (level INFO, a handler of
    its own): put it back, so that other modules' tests see the logging they expect."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
