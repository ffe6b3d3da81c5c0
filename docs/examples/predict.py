import httpx

from serving.codecs import decode_array

with open("serving/api/static/samples/scene-0.png", "rb") as f:
    r = httpx.post("http://127.0.0.1:8000/v1/models/scenes/predict", files={"file": f})
r.raise_for_status()  # errors are {"error": "..."} with a 4xx status
tasks = r.json()["predictions"][0]["tasks"]
print(tasks["background"]["label"], [s["label"] for s in tasks["shapes"]["labels"]])
depth = decode_array(tasks["depth"]["map"])  # metres at the model's grid, whatever the encoding
print(depth.shape, f"{float(depth.mean()):.2f} {tasks['depth']['units']}")
