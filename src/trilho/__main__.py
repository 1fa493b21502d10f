from trilho.cli import app

app(prog_name="trilho")
