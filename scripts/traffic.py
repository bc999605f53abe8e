"""A bounded loopback load generator: v2 inference requests at a steady rate, counting what answered.

Used by the canary tests and `make demo` (a canary is only judged on traffic), and by hand:

    .venv/airflow/bin/python scripts/traffic.py --url http://127.0.0.1:8085 --model iris-classifier --rate 20

Each request is one iris-like row (per-class means and spreads of the iris data), from the classes
`mix` names. Every request opens its own connection (`Connection: close`): a failure then is the
server's or the router's, never a kept-alive connection that a reloading router closed while idle
(which a client would resend; tests/airflow/test_local_router.py covers that case).
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter

import httpx

IRIS = {  # per class: (mean, standard deviation) of sepal length, sepal width, petal length, petal width
    "setosa": ((5.0, 0.35), (3.4, 0.38), (1.46, 0.17), (0.25, 0.1)),
    "versicolor": ((5.9, 0.52), (2.8, 0.31), (4.26, 0.47), (1.33, 0.2)),
    "virginica": ((6.6, 0.64), (3.0, 0.32), (5.55, 0.55), (2.03, 0.27)),
}


class Traffic:
    """`with Traffic(url, model, rate) as traffic:` sends until the block ends. `mix` (class -> weight)
    may be changed while it runs. Results: `answered` (served version -> count), `failures` (when,
    what), `latencies` (seconds)."""

    def __init__(self, url: str, model: str, rate: float = 20.0, mix: dict[str, float] | None = None,
                 seed: int = 7, timeout: float = 10.0):
        self.infer_url = f"{url.rstrip('/')}/v2/models/{model}/infer"
        self.rate, self.timeout = rate, timeout
        self.mix = mix or dict.fromkeys(IRIS, 1.0)
        self.answered: Counter = Counter()
        self.failures: list[tuple[float, str]] = []
        self.latencies: list[float] = []
        self._random, self._stop, self._thread = random.Random(seed), threading.Event(), None

    def row(self) -> list[float]:
        classes = list(self.mix)
        chosen = self._random.choices(classes, weights=[self.mix[c] for c in classes])[0]
        return [round(max(0.1, self._random.gauss(mean, sd)), 2) for mean, sd in IRIS[chosen]]

    def send_one(self, client: httpx.Client) -> None:
        row = self.row()
        body = {"inputs": [{"name": "features", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
        started = time.monotonic()
        try:
            answer = client.post(self.infer_url, json=body, headers={"Connection": "close"}, timeout=self.timeout)
        except httpx.HTTPError as exc:
            self.failures.append((time.time(), repr(exc)))
            return
        if answer.status_code != 200:
            self.failures.append((time.time(), f"HTTP {answer.status_code}: {answer.text[:200]}"))
            return
        self.latencies.append(time.monotonic() - started)
        self.answered[answer.json().get("model_version")] += 1

    def _run(self) -> None:
        with httpx.Client() as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.send_one(client)
                next_at += 1 / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def failures_since(self, when: float) -> list[tuple[float, str]]:
        return [f for f in self.failures if f[0] >= when]

    @property
    def started(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    def summary(self) -> str:
        total = sum(self.answered.values())
        p99 = sorted(self.latencies)[int(0.99 * (len(self.latencies) - 1))] if self.latencies else 0.0
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.answered.items(), key=lambda kv: str(kv[0])))
        return f"{total} answered ({versions or 'none'}), {len(self.failures)} failed, p99 {p99 * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8085", help="the router (mlserving_default)")
    parser.add_argument("--model", default="iris-classifier")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: at Ctrl-C)")
    args = parser.parse_args()
    with Traffic(args.url, args.model, args.rate) as traffic:
        try:
            deadline = time.monotonic() + args.seconds if args.seconds else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, (deadline or time.monotonic() + 5) - time.monotonic())))
                print(traffic.summary(), flush=True)
        except KeyboardInterrupt:
            pass
    print(traffic.summary())


if __name__ == "__main__":
    main()
