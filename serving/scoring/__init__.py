"""Batch offline scoring: image collections to Parquet with the API's own pre/post-processing.

``score(ScoreJob(...))`` is what ``polyhead score`` runs: local threads by default, Ray Data
with ``ray=``. See ``serving.scoring.columns`` for the row layout and
``serving.scoring.output`` for the resumable, exactly-once output directory.
"""

from serving.scoring.columns import prediction_from_row
from serving.scoring.predictor import ModelRef, Predictor, ScoreOptions
from serving.scoring.run import ScoreJob, score
from serving.scoring.sources import IMAGE_EXTENSIONS, InputList, list_inputs

__all__ = [
    "IMAGE_EXTENSIONS",
    "InputList",
    "ModelRef",
    "Predictor",
    "ScoreJob",
    "ScoreOptions",
    "list_inputs",
    "prediction_from_row",
    "score",
]
