"""`python -m tether` and the `tether` command."""
import sys


def main() -> None:
    if sys.argv[1:2] == ["exec"]:
        # The agent's imports take longer than anything else tether exec does before it can
        # start the program: its process is forked first and imports meanwhile.
        from .targets.early import fork_spare

        fork_spare()
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
