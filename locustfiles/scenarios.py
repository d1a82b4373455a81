"""kvswarm's scenarios as Locust user classes: one class per scenario of the config.

    locust -f locustfiles/ --kv-config configs/test_config.yaml [ColdStartUser ...]

The classes come from the config named by `--kv-config` (or `$KVSWARM_CONFIG`; built-in
defaults: the five scenarios of the original suite), so a new scenario is only YAML.
Pick them by class name, in the web UI's class picker, or by tag (`--tags cold_start`).
"""

from kvswarm.locust.entry import scenario_users

globals().update(scenario_users(__name__))
