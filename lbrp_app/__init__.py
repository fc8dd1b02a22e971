"""lbrp: a reverse-proxy L4 load balancer for Open vSwitch (os-ken application).

``osken-manager lbrp_app`` loads the application class ``LbrpController``
from this module. It is created on first access, so that ``lbrpctl`` and the
pure modules import without pulling in os-ken and eventlet.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["LbrpController"]


def __getattr__(name: str) -> Any:
    if name != "LbrpController":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # os-ken 3.x runs on eventlet, which warns on import that it is deprecated: noise here.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from lbrp_app.app import LbrpApp

    # osken-manager only loads classes whose __module__ is the module it was given.
    cls = type("LbrpController", (LbrpApp,), {"__module__": __name__,
                                               "__doc__": LbrpApp.__doc__})
    globals()[name] = cls
    return cls


def __dir__() -> list[str]:
    return sorted([*globals(), "LbrpController"])
