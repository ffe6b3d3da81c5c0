from polyhead.cli import app

app(prog_name="polyhead")
