"""The pipeline's life: `configure_logging()` builds it and swaps it in (`configure`), it is
flushed and shut down under one deadline at exit and on SIGTERM (`drain`, with `wakeup`
making sure a pending SIGTERM handler runs), and a forked child gets what it needs
(`fork`)."""

__all__: list[str] = []
