"""``python -m agent.cli`` = ``cellar`` (useful before the console script is installed)."""

from agent.cli import main

main()
