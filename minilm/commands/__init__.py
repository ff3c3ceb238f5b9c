"""One thin module per `minilm` subcommand (configure the parser, call the library, print); the table is minilm.cli."""
