"""CFT-CLIP: does a news thumbnail show the actors of its text? Scoring, evaluation and training.

Usable without the app: ``python -m cftclip_core --help``.
"""

__version__ = "0.1.0"
