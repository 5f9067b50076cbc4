"""Fairness study of a chest X-ray classifier: the cached pipeline behind the report and slides."""
