"""Triton Python-backend model: encoded photos in, a polyhead model's decoded outputs out.

The peer of the gateway in ``bench/photos.py``: what a user serving the same ``model.onnx``
with Triton instead would write. Input ``image_bytes`` (BYTES, one encoded image per row);
each image is decoded with Pillow (a JPEG at reduced DCT size when much larger than the model
input, as Pillow's ``draft`` allows), stretched to the model input, normalised with the
manifest's mean and std; every image of the requests Triton's dynamic batcher hands over runs
in one ONNX Runtime call (CPU, ONNX Runtime's own thread count). Outputs are the decoded
tensors at the model's grid, ``TASK.TENSOR``: the graph's own decoded outputs when the ONNX
has them, else computed here in NumPy from the raw outputs.

``photo.json`` beside this file (written by the bench) gives the input size, ``scale``,
``mean``, ``std`` and the outputs: ``{"name", "raw", "ops"}`` each.
"""

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from PIL import Image


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# batch axis 0, channels axis 1 (the layout of the raw outputs)
OPS = {
    "argmax": lambda x: x.argmax(axis=1).astype(np.uint8),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "softmax": _softmax,
    "l2_normalize": lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6),
    "squeeze_channel": lambda x: x[:, 0],
    "channels_last": lambda x: np.ascontiguousarray(np.moveaxis(x, 1, -1)),
    "float16": lambda x: x.astype(np.float16),
}


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.join(args["model_repository"], args["model_version"])
        with open(os.path.join(here, "photo.json")) as f:
            spec = json.load(f)
        self.size = (int(spec["width"]), int(spec["height"]))
        std = np.asarray(spec["std"], np.float32)
        self.gain = np.float32(spec["scale"]) / std  # (pixel * scale - mean) / std
        self.bias = np.asarray(spec["mean"], np.float32) / std
        options = ort.SessionOptions()
        options.intra_op_num_threads = 0
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            os.path.join(here, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.input = self.session.get_inputs()[0].name
        graph = {o.name for o in self.session.get_outputs()}
        self.outputs = spec["outputs"]
        for o in self.outputs:
            o["in_graph"] = o["name"] in graph
        self.fetch = list(
            dict.fromkeys(o["name"] if o["in_graph"] else o["raw"] for o in self.outputs)
        )
        # Pillow and NumPy release the GIL while they decode, resize and normalise
        self.pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)

    def _prepare(self, data):
        """Encoded bytes -> normalised CHW float32 at the model input size (stretched)."""
        img = Image.open(io.BytesIO(data))
        if img.format == "JPEG":
            img.draft("RGB", self.size)  # DCT scaling, never below the model input
        img = img.convert("RGB")
        if img.size != self.size:
            img = img.resize(self.size, Image.Resampling.BILINEAR)
        x = np.asarray(img, np.float32) * self.gain - self.bias
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def _request_inputs(self, request):
        blobs = pb_utils.get_input_tensor_by_name(request, "image_bytes").as_numpy().ravel()
        return list(self.pool.map(self._prepare, [bytes(b) for b in blobs]))

    def execute(self, requests):
        prepared, failed = [], {}
        for i, r in enumerate(requests):
            try:
                prepared.append(self._request_inputs(r))
            except Exception as e:  # a broken image fails its request, not the batch
                failed[i] = pb_utils.TritonError(f"cannot decode image: {e}")
                prepared.append([])
        images = [x for xs in prepared for x in xs]
        decoded = {}
        if images:
            results = self.session.run(self.fetch, {self.input: np.stack(images)})
            results = dict(zip(self.fetch, results, strict=True))
            for o in self.outputs:
                if o["in_graph"]:
                    decoded[o["name"]] = results[o["name"]]
                    continue
                x = results[o["raw"]]
                for op in o["ops"]:
                    x = OPS[op](x)
                decoded[o["name"]] = x
        responses, offset = [], 0
        for i, xs in enumerate(prepared):
            if i in failed:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=failed[i]))
                continue
            n = len(xs)
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(a[offset : offset + n]))
                for name, a in decoded.items()
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += n
        return responses

    def finalize(self):
        self.pool.shutdown(wait=False)
