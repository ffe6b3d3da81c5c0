"""Triton Python-backend model that runs a polyhead ONNX graph with ONNX Runtime (tests only).

The tritonserver in the nvidia-pytriton wheel has no onnxruntime backend; this stands in for it
so the gateway's Triton backend is tested against a real Triton. Triton's dynamic batcher hands
``execute`` several requests at once: they run as one ONNX Runtime call.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.intra_op_num_threads = int(os.environ.get("POLYHEAD_TEST_ORT_THREADS", "0"))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(here, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        results = self.session.run(self.outputs, {self.input: batch})
        responses, offset = [], 0
        for n in sizes:
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[offset : offset + n]))
                for name, out in zip(self.outputs, results, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += n
        return responses
