"""Specifications: what a run, a proof or a counterfactual file is made of, and the rules that check them.

Nothing here imports torch (a test asserts it), so the app, the store's command line and the job
queue can check settings before anything heavy loads; the modules that do the work import these.
"""
