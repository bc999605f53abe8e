"""The checkout's Docker engine (scripts/dockerd.sh), through the docker CLI."""

from __future__ import annotations

import functools
import json
import os
import subprocess

from tests.support import REPO


class DockerError(RuntimeError):
    """A docker command failed; the message carries its stderr."""


@functools.cache
def docker_host() -> str:
    """The engine's socket, starting the engine if needed (as `make images` does)."""
    script = str(REPO / "scripts" / "dockerd.sh")
    subprocess.run([script, "start"], check=True, capture_output=True, timeout=120)
    return subprocess.run([script, "host"], check=True, capture_output=True, text=True).stdout.strip()


def docker(*args: str, input: str | None = None, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": docker_host(), "DOCKER_BUILDKIT": "0"}
    done = subprocess.run(["docker", *args], input=input, capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise DockerError(f"docker {' '.join(args[:3])} ...: {done.stderr.strip() or done.stdout.strip()}")
    return done


def image_exists(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


@functools.cache
def image_user(image: str) -> str:
    """The USER an image runs as ('' = root)."""
    return json.loads(docker("image", "inspect", image).stdout)[0]["Config"].get("User") or ""


def inspect(container: str) -> dict | None:
    done = docker("container", "inspect", container, check=False)
    return json.loads(done.stdout)[0] if done.returncode == 0 else None


def remove(*containers: str) -> None:
    if containers:
        docker("rm", "-f", *containers, check=False)
