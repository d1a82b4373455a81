"""kvswarm's analysis package: loading runs, summaries, comparisons and reports.

Imports nothing from Locust: it reads what a run wrote to disk.
"""
