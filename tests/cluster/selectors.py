"""A LabelSelector (metav1.LabelSelector: matchLabels and matchExpressions) against an object's labels,
as k8s.io/apimachinery/pkg/apis/meta/v1.LabelSelectorAsSelector evaluates it; nil or empty selects all."""

from __future__ import annotations


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if not {"In": present and labels[key] in values, "NotIn": not present or labels[key] not in values,
                "Exists": present, "DoesNotExist": not present}[operator]:
            return False
    return True
