"""Run a submitted KFP pipeline spec in containers with kfp.local's DockerRunner (pipeline environment).

    python kfp_runner.py SPEC.yaml PARAMETERS.json DOCKER_OPTIONS.json PIPELINE_ROOT

SPEC.yaml is the pipeline spec as it was submitted; each component runs in a container of the image
its executor declares, with its own command and args (as KFP's launcher runs them); the platform
settings KFP's driver would put on the pod arrive as DOCKER_OPTIONS (mounts, env, user, network).
Prints the pipeline's output as one JSON line; exits 1 with the error on a failed run.
"""

import json
import sys
from pathlib import Path


def main(spec: str, parameters: str, options: str, pipeline_root: str) -> int:
    import docker
    from kfp import components, local

    settings = json.loads(Path(options).read_text())
    mounts = [docker.types.Mount(**mount) for mount in settings.pop("mounts", [])]
    local.init(runner=local.DockerRunner(mounts=mounts, **settings), pipeline_root=pipeline_root,
               raise_on_error=True)
    pipeline = components.load_component_from_file(spec)
    try:
        task = pipeline(**json.loads(Path(parameters).read_text()))
        output = task.output
    except Exception as exc:  # kfp.local raises with the failing task's name
        print(f"run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"output": output}))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
