from bodycomp_cli.cli import main

main()
