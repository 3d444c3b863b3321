from switchpoint.cli import main

main()
