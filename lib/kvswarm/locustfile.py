"""Every scenario of the config as a Locust user class, in one locustfile inside the package.

`kvswarm demo` runs it, and `locust -f` takes its path (`kvswarm.locustfile.__file__`), so
it works from any directory. The classes come from the config named by `--kv-config`
(built-in defaults: the five scenarios of the original suite); see `kvswarm.locust.entry`.
"""

from kvswarm.locust.entry import scenario_users

globals().update(scenario_users(__name__))
