from capsim.capsearch.cli.main import main

main()
