from capsim.capsearch.cli.main import run

run()
