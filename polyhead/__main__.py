from polyhead.cli import run

run()
