URL=http://127.0.0.1:8000/v1/models/scenes/predict
A=serving/api/static/samples/scene-1.png
B=serving/api/static/samples/scene-2.png
# two images, two tasks decoded (the model still runs once per image)
curl -s -F files=@$A -F files=@$B "$URL?tasks=semseg,background"
# the raw image as the body; dense maps as viewable PNGs
curl -s --data-binary @$A -H 'Content-Type: image/png' "$URL?encoding=png"
# base64 in JSON, written to a file first (an image on the command line hits the argument limit)
{ printf '{"images": ["'; base64 -w0 $A; printf '"]}'; } > request.json
curl -s -H 'Content-Type: application/json' --data-binary @request.json "$URL"
