"""``python -m chatops`` runs the CLI."""

from chatops.cli.app import main

if __name__ == "__main__":
    main()
