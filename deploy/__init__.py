"""The processes of a deployment: the launcher behind `worldstate up`, and the `worldstate` command."""
