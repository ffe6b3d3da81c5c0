polyhead data synth --out data/scenes --n 2000 --size 128 --seed 0
polyhead train --config configs/scenes.yaml --out runs/scenes
polyhead evaluate --run runs/scenes
polyhead export --run runs/scenes --repo my_repo --name scenes
polyhead evaluate --model my_repo/scenes/1 --data data/scenes
