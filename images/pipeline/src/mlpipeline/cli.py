"""`mlpipeline <stage>`: one JSON result on stdout, progress on stderr, a one-line error and exit 1 on bad input."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import logging
import os
import sys

from .errors import PipelineError
from .logs import setup_logging
from .output import emit
from .volume import Limits

log = logging.getLogger("mlpipeline")
MAX_ERROR_CHARS = 1000  # of an external failure's message in the one error line


def _model_name_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("MLPIPELINE_MODEL_NAME")
    parser.add_argument("--model-name", default=default, required=default is None,
                        help="registered model name: the dataset file's model_name (env MLPIPELINE_MODEL_NAME)")


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    """The dataset file, as a path (a person at a shell) or as its text (the DAG: a stage pod on a cluster
    gets exactly the text the DAG parsed, never a file from an image)."""
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--dataset", metavar="FILE", help="the dataset file (datasets/<name>.yaml)")
    given.add_argument("--dataset-content", metavar="TEXT", help="the dataset file's whole text")
    parser.add_argument("--dataset-name", default="inline", help="with --dataset-content: the file's name "
                                                                  "(its stem), for messages and lineage")


def _dataset(args):
    from . import dataset

    if args.dataset:
        return dataset.load(args.dataset)
    return dataset.parse_text(args.dataset_content, f"{args.dataset_name}.yaml (--dataset-content)",
                              args.dataset_name)


def _common(parser: argparse.ArgumentParser, *, registry: bool = False, run_key: bool = False) -> None:
    parser.add_argument("--data-root", default=os.environ.get("MLPIPELINE_DATA_ROOT"),
                        required="MLPIPELINE_DATA_ROOT" not in os.environ,
                        help="the data volume (env MLPIPELINE_DATA_ROOT)")
    if run_key:
        parser.add_argument("--run-key", required=True, help="the run's key, as printed by split")
    if registry:
        _model_name_option(parser)
        parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""),
                            help="MLflow tracking server (env MLFLOW_TRACKING_URI)")


def _context(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dag-id", default="", help="Airflow DAG id, recorded as lineage")
    parser.add_argument("--dag-run-id", default="", help="Airflow DAG run id, recorded as lineage")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (`mlpipeline <stage>: error: ...`), like every other error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mlpipeline", description=__doc__)
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="stage")

    p = sub.add_parser("simulate", help="write a simulated labelled batch, in the dataset's source format, into "
                                        "landing/<model>/<partition>/, drawn from a reference sample")
    _common(p)
    _dataset_options(p)
    p.add_argument("--partition", required=True)
    p.add_argument("--rows", type=int, default=1000, help="1 to 10,000,000 (default 1000)")
    p.add_argument("--drift", default="none", help="a classification label: none | covariate | concept | "
                                                   "label_noise | recalibration; a regression label: none | "
                                                   "covariate | coefficient | heteroscedastic | recalibration "
                                                   "(default none)")
    p.add_argument("--severity", type=float, default=1.0,
                   help="classification: covariate: numeric features shift up by this many pooled within-class std "
                        "devs and categorical frequencies tilt towards the rarest categories by min(severity, 1); "
                        "concept (a fixed region of rows, relabelled by a fixed permutation of the classes) and "
                        "label_noise (random rows, random other class): the share of rows whose label changes, 0-1. "
                        "Regression, through the numeric feature j most correlated with the target (z_j its "
                        "standardised value, sd_y the target's std dev): covariate: rows drawn with weights "
                        "exp(severity z_j), targets kept; coefficient: y + severity sd_y z_j; heteroscedastic: "
                        "y + N(0, (severity sd_y |z_j|)^2). Recalibration: not used. >= 0 (default 1)")
    p.add_argument("--recalibrate", action="append", default=[], metavar="COLUMN*SCALE[+OFFSET]",
                   help="with --drift recalibration (once per feature): the numeric feature COLUMN as a recalibrated "
                        "sensor reads it, each value x becoming SCALE x + OFFSET (COLUMN*1.6, COLUMN+0.5, "
                        "COLUMN*1.1-0.2); every other column and the label stay as they were")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes, and the same rows "
                                                       "whatever the drift (but a regression label's covariate "
                                                       "drift, which draws rows by weight) (default 0)")
    p.add_argument("--reference", metavar="FILE|sklearn:NAME",
                   help="the sample rows are drawn from (with replacement, numeric values jittered): a .csv or "
                        ".parquet file holding the dataset's columns, or a labelled table bundled with "
                        "scikit-learn, sklearn:<name> for its load_<name>, its features named as a dataset file "
                        "names them (units in parentheses dropped, lower-case, other characters '_': 'mean "
                        "radius' is mean_radius) and its label the target's names (classification) or the numeric "
                        "target (regression: sklearn:diabetes, or sklearn:friedman1, make_friedman1's rows with "
                        "features x0..x9). Default: the bundled table of the label's task that has every feature "
                        "the dataset declares; required for any dataset none has")

    p = sub.add_parser("ingest", help="validate landing/<model>/<partition>/ into curated/ or quarantine/")
    _common(p)
    p.add_argument("--partition", required=True)
    _dataset_options(p)
    for limit, default in vars(Limits()).items():  # a file over any of them is quarantined with the reason
        p.add_argument(f"--{limit.replace('_', '-')}", type=int, default=default, metavar="N",
                       help=f"default {default}")

    p = sub.add_parser("split", help="stratified train/test split of the training window + the fresh set")
    _common(p)
    p.add_argument("--partition", required=True)
    p.add_argument("--run-key", help="default: derived from data fingerprint, config hash and code version")
    p.add_argument("--window", help="'all' or 'last:N' partitions (default: the dataset file's window)")
    p.add_argument("--pull", metavar="JSON", help="what the DAG's pull_batch fetched for the partition (its result, "
                                                  "a JSON object), kept in the manifest as lineage")
    _dataset_options(p)

    p = sub.add_parser("detect", help="score the champion on the fresh set and measure drift")
    _common(p, registry=True, run_key=True)
    p.add_argument("--live-window", default="", help="also measure the drift of the traffic the model server "
                                                     "answered in this window (a Prometheus duration: 30m, 1h, 1d)")
    p.add_argument("--prometheus-url", default="", help="the Prometheus that scrapes the model server "
                                                        "(needed with --live-window)")

    p = sub.add_parser("train-local", help="run the compiled KFP training pipeline with kfp.local")
    _common(p, registry=True, run_key=True)
    _context(p)

    p = sub.add_parser("register", help="register the run's challenger; move champion on promote")
    _common(p, registry=True, run_key=True)
    _context(p)
    p.add_argument("--kfp-run-id", default="", help="KFP run id (default: the one the training run recorded)")
    p.add_argument("--approved-by", default="", help="who approved the promotion (the DAG's approval task), "
                                                     "recorded on the version and its promotion")

    p = sub.add_parser("rollback", help="move champion back to an earlier version, recorded like a promotion")
    p.add_argument("--to-version", help="the registry version to serve again; without it (no version was served "
                                        "before the failed deploy) nothing moves, and the result says so")
    p.add_argument("--from-version", help="the version being rolled back: the champion the move expects to "
                                          "replace (required with --to-version); if the champion is another "
                                          "version by now, nothing moves and the outcome is 'superseded'")
    p.add_argument("--reason", required=True, help="why (recorded with the event)")
    _model_name_option(p)
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""))
    _context(p)

    p = sub.add_parser("fetch-model", help="download a registry version's model directory (for serving)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="registry version number")
    which.add_argument("--alias", help="registry alias, e.g. champion")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dest", help="directory to create (replaced whole, never half-written)")
    where.add_argument("--into", help="parent directory: the model goes to INTO/v<version> (kept if already there)")
    _model_name_option(p)
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""))

    p = sub.add_parser("champion-at", help="which version was champion at a time, from the promotion record")
    p.add_argument("--time", default="now", help="ISO 8601 time (default: now)")
    _model_name_option(p)
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", ""))

    p = sub.add_parser("compile", help="compile the KFP pipeline to pipelines/training.yaml")
    p.add_argument("--output", help="output path (default: the committed pipelines/training.yaml)")
    return parser


def _volume(args, model_name: str | None = None):
    from .volume import DataVolume

    return DataVolume(args.data_root, model_name)


def _use_tracking(args) -> None:
    if getattr(args, "tracking_uri", ""):
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise PipelineError("no MLflow tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    # Retries and timeouts are MLflow's own (MLFLOW_HTTP_REQUEST_MAX_RETRIES, _TIMEOUT, _BACKOFF_FACTOR, ...):
    # one policy for every call a stage makes, set by the environment the stage is given.


def cmd_simulate(args) -> dict:
    from .simulate import (
        THROUGH_DRIFT_FEATURE,
        batch_name,
        check_drift_recalibrations,
        check_parameters,
        drift_feature,
        load_reference,
        parse_recalibration,
        simulate,
        to_bytes,
    )
    from .volume import check_partition, write_bytes_atomic

    check_partition(args.partition)
    dataset = _dataset(args)
    check_parameters(args.rows, args.drift, args.severity, dataset.task)  # the drifts are the label's task's
    recalibrations = tuple(parse_recalibration(text, dataset) for text in args.recalibrate)
    check_drift_recalibrations(args.drift, recalibrations, dataset)
    folder = _volume(args, dataset.model_name).landing(args.partition)
    reference = load_reference(args.reference, dataset)  # every check before anything is written
    log.info("simulating %d rows (drift %s, severity %g, seed %d) of %s from %s (%d rows)", args.rows, args.drift,
             args.severity, args.seed, dataset.model_name, reference.source, reference.rows)
    frame = simulate(dataset, args.rows, args.drift, args.severity, args.seed, reference, recalibrations)
    fmt = dataset.source.format
    data = to_bytes(frame, fmt)
    target = folder / batch_name(args.rows, args.drift, args.severity, args.seed, data, fmt)
    write_bytes_atomic(target, data)
    write_bytes_atomic(folder / "_SUCCESS", b"")
    result = {"path": str(target), "partition": args.partition, "model_name": dataset.model_name, "format": fmt,
              "reference": reference.source, "rows": len(frame), "bytes": len(data), "drift": args.drift,
              "severity": args.severity, "seed": args.seed}
    if recalibrations:
        result["recalibrated"] = [str(r) for r in recalibrations]
    if dataset.regression:  # the target's summary, and the feature a drift acted through
        values = frame[dataset.label]
        result["target"] = {"mean": float(values.mean()), "std": float(values.std(ddof=0)),  # ddof 0: one row too
                            "min": float(values.min()), "max": float(values.max())}
        if args.drift in THROUGH_DRIFT_FEATURE:
            result["drift_feature"] = drift_feature(dataset, reference)
        return result
    counts = frame[dataset.label].value_counts()
    return {**result, "class_counts": {c: int(counts.get(c, 0)) for c in reference.classes}}


def cmd_ingest(args) -> dict:
    from .ingest import ingest_partition

    limits = Limits(**{name: getattr(args, name) for name in vars(Limits())})
    dataset = _dataset(args)
    return ingest_partition(_volume(args, dataset.model_name), args.partition, dataset, limits)


def cmd_split(args) -> dict:
    from .config import run_config
    from .split import split_partition
    from .volume import check_partition, check_run_key

    check_partition(args.partition)
    if args.run_key:
        check_run_key(args.run_key)
    dataset = _dataset(args)
    pull = None
    if args.pull is not None:  # checked before anything is written
        from .pull_record import parse

        pull = parse(args.pull, dataset.source, args.partition)
    return split_partition(_volume(args, dataset.model_name), args.partition, dataset,
                           run_config(dataset, args.window), args.run_key, pull)


def cmd_detect(args) -> dict:
    from .detect import detect

    if args.live_window:
        from .live_drift import check_window

        check_window(args.live_window)
        if not args.prometheus_url:
            raise PipelineError("--live-window needs --prometheus-url (the Prometheus that scrapes the model server)")
    _use_tracking(args)
    return detect(_volume(args), args.run_key, args.model_name, args.live_window, args.prometheus_url)


def cmd_train_local(args) -> dict:
    from .kfp_local import run_training_locally

    _use_tracking(args)
    return run_training_locally(_volume(args), args.run_key, args.model_name, os.environ["MLFLOW_TRACKING_URI"],
                                args.dag_id, args.dag_run_id)


def cmd_register(args) -> dict:
    from .register import register_run

    _use_tracking(args)
    context = {"airflow_dag_id": args.dag_id, "airflow_run_id": args.dag_run_id, "kfp_run_id": args.kfp_run_id,
               "approved_by": args.approved_by}
    return register_run(_volume(args), args.run_key, args.model_name, context)


def cmd_champion_at(args) -> dict:
    from .model_registry import Registry

    _use_tracking(args)
    try:
        when = dt.datetime.now(dt.UTC) if args.time == "now" else dt.datetime.fromisoformat(args.time)
    except ValueError as exc:
        raise PipelineError(f"--time must be ISO 8601 (e.g. 2026-11-27T12:00:00+00:00), got {args.time!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    registry = Registry(args.model_name)
    at_ms = int(when.timestamp() * 1000)
    return {"model_name": args.model_name, "time": when.isoformat(), "champion_version": registry.champion_at(at_ms),
            "history": registry.champion_history()}


def cmd_rollback(args) -> dict:
    from .model_registry import ChampionMoved, Registry

    if not args.to_version:
        log.warning("no version to roll back to: the champion stays (%s)", args.reason)
        return {"model_name": args.model_name, "rolled_back": False, "reason": args.reason}
    if not args.from_version:
        raise PipelineError("rollback --to-version needs --from-version: the champion it expects to replace")
    _use_tracking(args)
    registry = Registry(args.model_name)
    version = registry.version(args.to_version)
    context = {"airflow_dag_id": args.dag_id, "airflow_run_id": args.dag_run_id}
    try:
        moved = registry.move_champion(version, "rollback", args.reason, context, expected=args.from_version)
    except ChampionMoved as exc:  # another run promoted or rolled back since: its move stands
        log.warning("not rolled back: %s", exc)
        return {"model_name": args.model_name, "rolled_back": False, "outcome": "superseded", "reason": str(exc)}
    return {"model_name": args.model_name, "rolled_back": True, "outcome": "rolled_back", **moved}


def cmd_fetch_model(args) -> dict:
    from pathlib import Path

    from .model_registry import Registry

    _use_tracking(args)
    registry = Registry(args.model_name)
    version = registry.version(args.version) if args.version else registry.alias(args.alias)
    if version is None:
        raise PipelineError(f"{args.model_name} has no version with alias {args.alias!r}")
    path = registry.download(version, Path(args.dest) if args.dest else Path(args.into) / f"v{version.version}")
    return {"model_name": args.model_name, "version": version.version, "run_id": version.run_id,
            "model_dir": str(path.resolve())}


def cmd_compile(args) -> dict:
    from pathlib import Path

    from .kfp_pipeline import TRAINING_YAML, compile_pipeline

    return {"compiled": str(compile_pipeline(Path(args.output) if args.output else TRAINING_YAML))}


COMMANDS = {"simulate": cmd_simulate, "ingest": cmd_ingest, "split": cmd_split, "detect": cmd_detect,
            "train-local": cmd_train_local, "register": cmd_register, "rollback": cmd_rollback,
            "fetch-model": cmd_fetch_model, "champion-at": cmd_champion_at, "compile": cmd_compile}


def main(argv: list[str] | None = None) -> int:
    """The `mlpipeline` process's entry point: the process exits when it returns."""
    try:
        return _run(build_parser().parse_args(argv))
    finally:
        # Exiting, Python collects every object the imports made (MLflow, scikit-learn, pandas): ~0.5 s
        # per stage. Frozen, they are left to the OS; atexit handlers and finalizers still run.
        gc.freeze()


def _run(args: argparse.Namespace) -> int:
    setup_logging(logging.WARNING if args.quiet else logging.INFO)
    try:
        # Libraries (MLflow, kfp.local) print progress to stdout; keep stdout for the JSON result.
        with contextlib.redirect_stdout(sys.stderr):
            result = COMMANDS[args.command](args)
    except PipelineError as exc:
        print(f"mlpipeline {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        message = _external_failure(exc)
        if message is None:
            raise
        print(f"mlpipeline {args.command}: error: {message}", file=sys.stderr)
        return 1
    emit(result)
    return 0


def _external_failure(exc: Exception) -> str | None:
    """One-line messages for failures of what the stages use: MLflow, the data volume. MLflow's client raises
    MlflowException for what the server refused (RestException: "<ERROR_CODE>: <message>"; a non-JSON answer
    such as the basic-auth app's 401: "API request to endpoint ... failed with error code 401 != 200. Response
    body: ...") and for a server it could not reach once its retries were spent. A message of several lines
    (a download's per-file failures: the first line names only the store) is joined into one, at most
    MAX_ERROR_CHARS. Only a stage that imported MLflow can raise its exceptions: the others do not import it
    here."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")
    requests_exceptions = sys.modules.get("requests.exceptions")
    if mlflow_exceptions and isinstance(exc, mlflow_exceptions.MlflowException):
        text = " ".join(str(exc.message).split())[:MAX_ERROR_CHARS] or type(exc).__name__
        return f"MLflow at {os.environ.get('MLFLOW_TRACKING_URI')}: {text}"
    if requests_exceptions and isinstance(exc, requests_exceptions.RequestException):
        # MLflow's artifact repositories let `requests`' own errors through (an HTTP error answering a listing)
        text = " ".join(str(exc).split())[:MAX_ERROR_CHARS]
        return f"MLflow at {os.environ.get('MLFLOW_TRACKING_URI')}: {type(exc).__name__}: {text}"
    if isinstance(exc, OSError) and exc.strerror:  # the data volume: full, read-only, not permitted
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return None


if __name__ == "__main__":
    sys.exit(main())
