"""Shared layer: config models, wire schemas, task registry, datasets, CLI plumbing.

Imports none of `actors`, `rewarders`, `learner` (DESIGN.md §3).
"""
