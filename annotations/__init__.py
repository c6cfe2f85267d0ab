"""The studio database: datasets, items and media, model predictions; later users and labels.

Submodules: ``settings`` (the instance folder), ``db`` (engines, sessions, migrations),
``models`` (tables), ``importer`` (import, scores, read helpers), ``cli``.
"""
