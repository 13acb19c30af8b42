from autokd.cli import main

main()
