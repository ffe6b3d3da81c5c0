curl -s -F file=@serving/api/static/samples/scene-0.png \
  http://127.0.0.1:8000/v1/models/scenes/predict
