from .cli import app

app(prog_name="s4d")
