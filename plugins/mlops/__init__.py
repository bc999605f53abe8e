"""The Airflow side of the continuous-training platform, laid out like a provider package:
hooks/ (one external system each), operators/, sensors/, triggers/ (imported by the triggerer by
path, so they live here), notifications/. Nothing here imports scikit-learn, kfp or kserve: the
stages run in the pipeline environment (a subprocess locally, a pod in a cluster)."""
