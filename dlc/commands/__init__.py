"""One module per `dlc` subcommand; each defines `register(subparsers)` and a `run(args) -> int`."""
