# A stand-in for the official apache/airflow:3.3.2-python3.11 image, for machines that cannot pull it
# (scripts/images.sh builds it only then). It provides what images/airflow/Dockerfile relies on: the
# `airflow` user (uid 50000, group 0) installing into its user site, AIRFLOW_HOME=/opt/airflow, and
# apache-airflow 3.3.2 installed against pinned constraints (the project's requirements.txt, the same
# lock the official image's constraints file plays).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}
COPY images/bootstrap-requirements.txt /tmp/bootstrap-requirements.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/bootstrap-requirements.txt
COPY requirements.txt /tmp/constraints.txt
RUN uv pip install --system --no-cache --compile-bytecode --require-hashes --constraint /tmp/constraints.txt apache-airflow==3.3.2 \
    && rm /tmp/constraints.txt
RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow && chown airflow:0 /opt/airflow \
    && printf '#!/bin/sh\n# As the official image: an executable runs as given, anything else is an airflow subcommand.\nif [ $# -gt 0 ] && command -v "$1" >/dev/null 2>&1; then exec "$@"; fi\nexec airflow "$@"\n' \
       > /entrypoint && chmod 755 /entrypoint
ENV AIRFLOW_HOME=/opt/airflow PATH=/home/airflow/.local/bin:$PATH PIP_USER=true
USER 50000
WORKDIR /opt/airflow
ENTRYPOINT ["/entrypoint"]
CMD ["--help"]
