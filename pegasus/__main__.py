from pegasus.cli import run

run()
