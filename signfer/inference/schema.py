"""The per-frame table that video inference produces: its columns, and reading them back.

The producer owns its schema: :func:`signfer.inference.annotate.annotate_frames`
returns one row per kept frame with the columns

``video``       file name of the video
``frame``       decoded frame index (see :mod:`signfer.video`)
``time_s``      presentation time in seconds
``face``        whether a face was found (bool)
``x y w h``     the face box used (the largest one), NaN without a face
``box_source``  ``detected``, ``tracked`` (box carried from the last detection,
               ``--detect-every N``) or empty when there is no face
``det_score``   the score of the detection the box came from
``n_faces``     how many faces that detection returned
``prob_<class>`` the classifier's probability per class, in the model's
                label order; NaN without a face
``label``       the most probable class, ``""`` without a face
``confidence``  its probability, NaN without a face
``<tag>:prob_<class>`` with several fused models (e.g. ``upper:prob_anger``):
                each model's own probabilities; ``prob_<class>`` is then
                their mean (:class:`~signfer.inference.classifier.FusedClassifier`)

and :func:`~signfer.inference.annotate.add_smoothed` adds ``label_smoothed``
and ``confidence_smoothed``. Image prediction
(:func:`signfer.inference.predict.predict_images`, :class:`signfer.Recognizer`)
names its probability columns the same way. CSV, ELAN and plots
(:mod:`signfer.export`) only read this table.

Example:
    >>> table = pd.DataFrame({"frame": [0], "prob_anger": [0.2], "prob_neutral": [0.8]})
    >>> prob_columns(table), class_names(table)
    (['prob_anger', 'prob_neutral'], ['anger', 'neutral'])
"""

from __future__ import annotations

import pandas as pd

PROB_PREFIX = "prob_"


def prob_columns(table: pd.DataFrame) -> list[str]:
    """The ``prob_<class>`` columns of a per-frame table, in the model's label order."""
    return [c for c in table.columns if str(c).startswith(PROB_PREFIX)]


def class_names(table: pd.DataFrame) -> list[str]:
    """The class names behind :func:`prob_columns`, in the same order."""
    return [c[len(PROB_PREFIX):] for c in prob_columns(table)]
