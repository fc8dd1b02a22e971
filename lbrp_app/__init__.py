"""lbrp: a reverse-proxy L4 load balancer for Open vSwitch (os-ken application).

``osken-manager lbrp_app`` loads the application class defined here.
"""

import warnings

# os-ken 3.x runs on eventlet, which warns on import that it is deprecated: noise for users.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from lbrp_app.app import LbrpApp as _LbrpApp


class LbrpController(_LbrpApp):
    """The class osken-manager loads (it only looks at classes defined in this module)."""


__all__ = ["LbrpController"]
