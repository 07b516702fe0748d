"""`teleposture-agent`, the command line: `main` builds the parser, one module per group of
subcommands (check, service, privacy, access)."""
