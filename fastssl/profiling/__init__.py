"""Pieces of ``fastssl profile`` (the command itself is ``fastssl.profile``): ``measure`` times
the loader, the step and the real loop; ``operators`` the loaders' operators one by one; ``host``
samples CPU / GPU use; ``report`` turns the numbers into a verdict, suggestions, a table, a
validated JSON document and a plot."""
