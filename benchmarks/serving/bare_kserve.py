"""The stack's reference: a bare KServe ModelServer with KServe's defaults serving the same
sklearn estimator, with no validation and no extra metrics.  python bare_kserve.py MODEL_DIR PORT"""

import sys
from pathlib import Path

import numpy as np
from kserve import Model, ModelServer
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import generate_uuid

from mlpipeline.model_format import load_estimator, read_mlmodel


class Bare(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path

    def load(self):
        # The serving environment has no MLflow: the estimator is loaded as our server loads it (at start
        # only; requests go through KServe's own path, with none of our code).
        path = Path(self.path).resolve()
        self.estimator = load_estimator(read_mlmodel(path), path)
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers=None):
        rows = np.column_stack([i.as_numpy() for i in payload.inputs])
        labels = self.estimator.predict(rows).tolist()
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name,
                             infer_outputs=[InferOutput("predictions", [len(labels)], "BYTES", labels)])


if __name__ == "__main__":
    model = Bare("iris", sys.argv[1])
    model.load()
    ModelServer(http_port=int(sys.argv[2]), enable_grpc=False).start([model])
