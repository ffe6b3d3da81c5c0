import numpy as np
import tritonclient.http as httpclient  # pip install 'tritonclient[http]'

client = httpclient.InferenceServerClient("127.0.0.1:8000")
image = httpclient.InferInput("image_bytes", [1, 1], "BYTES")  # an encoded image, pre-processed
with open("serving/api/static/samples/scene-0.png", "rb") as f:  # by the gateway as /v1 does
    image.set_data_from_numpy(np.array([[f.read()]], dtype=object))
wanted = ("semseg.classes", "depth.depth", "background.label")
result = client.infer(
    "scenes", [image], outputs=[httpclient.InferRequestedOutput(n) for n in wanted]
)
print(result.as_numpy("semseg.classes").shape)  # (1, 128, 128): uint8 classes, model grid
print(result.as_numpy("background.label"))  # [[b'...']]
