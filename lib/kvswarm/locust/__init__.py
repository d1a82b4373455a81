"""kvswarm's Locust glue: one plugin object per Locust `Environment`.

Everything that knows Locust lives here: the `--kv-*` options, the user classes made from
the config's scenarios, per-request reporting, shipping records from workers to the
master and the run's lifecycle. The measuring client, the workloads and the analysis
package know nothing of Locust.
"""
