from vnest.cli.main import main

main()
