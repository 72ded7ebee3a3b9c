from clawd.cli import main

main()
