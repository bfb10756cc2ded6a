"""The node host: the `enforcer` command, the typed configuration, the supervisor and the start of
every child process. The only layer that knows every process package."""
