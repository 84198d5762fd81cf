from trimodal.cli import main

main()
