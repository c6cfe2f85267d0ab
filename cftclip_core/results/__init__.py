"""What the results pages compute, from one dataset's scores and labels (``ResultsData``): thresholds and
their curves, the Articles table, the humans' agreement beside the model's, confusion cells and the
triage queue, and score sets side by side. Pure functions over frames: no database, no Streamlit
(``annotations.results`` reads the data; the pages draw it).
"""

from cftclip_core.results.articles import DISAGREEMENTS, ArticleFilter, articles, filter_articles, model_similarities
from cftclip_core.results.comparison import Comparison, compare_score_sets, metrics_table
from cftclip_core.results.data import (
    ALL_ITEMS,
    OUTSIDE_VALIDATION,
    REFERENCES,
    VALIDATION_SPLIT,
    ResultsData,
    ResultsError,
    ScoreSetInfo,
    evaluated,
    label_name,
    labelled,
    predict,
    with_predictions,
)
from cftclip_core.results.disagreement import CELLS, confusion_cells, confusion_counts, triage_queue
from cftclip_core.results.evaluation import (
    METRIC_COLUMNS,
    Evaluation,
    describe_evaluation,
    describe_threshold,
    evaluate_score_set,
)
from cftclip_core.results.humans import human_agreement, human_ceiling, model_agreement_with_annotators
from cftclip_core.results.thresholds import (
    STRATEGIES,
    ThresholdChoice,
    choose_threshold,
    metrics_at,
    similarity_histogram,
    threshold_curves,
)

__all__ = [
    "ALL_ITEMS", "CELLS", "DISAGREEMENTS", "METRIC_COLUMNS", "OUTSIDE_VALIDATION", "REFERENCES", "STRATEGIES",
    "VALIDATION_SPLIT", "ArticleFilter", "Comparison", "Evaluation", "ResultsData", "ResultsError", "ScoreSetInfo",
    "ThresholdChoice", "articles", "choose_threshold", "compare_score_sets", "confusion_cells", "confusion_counts",
    "describe_evaluation", "describe_threshold", "evaluate_score_set", "evaluated", "filter_articles", "human_agreement", "human_ceiling", "label_name", "labelled", "metrics_at",
    "metrics_table", "model_agreement_with_annotators", "model_similarities", "predict", "similarity_histogram",
    "threshold_curves", "triage_queue", "with_predictions",
]
