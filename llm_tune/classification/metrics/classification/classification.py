"""An `evaluate` metric module, loaded from this local path (evaluate.load("accuracy") needs the network):
accuracy, macro-F1, per-class precision / recall / F1 and the confusion matrix, computed by scikit-learn."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

_DESCRIPTION = "Single-label classification: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix."
_KWARGS = """
Args:
    predictions (list of int): predicted label ids.
    references (list of int): true label ids.
    num_labels (int): how many labels there are; ids are 0 .. num_labels - 1.
Returns:
    accuracy, macro_f1, precision, recall, f1 (lists, one per label), support, confusion_matrix (rows: true).
"""


class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels):
        ids = list(range(num_labels))
        precision, recall, f1, support = precision_recall_fscore_support(
            references, predictions, labels=ids, zero_division=0
        )
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, labels=ids, average="macro", zero_division=0)),
            "precision": [float(x) for x in precision],
            "recall": [float(x) for x in recall],
            "f1": [float(x) for x in f1],
            "support": [int(x) for x in support],
            "confusion_matrix": confusion_matrix(references, predictions, labels=ids).tolist(),
        }
