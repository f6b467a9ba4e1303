"""The library entry points of the commands, one module each: `convert` (the pipeline driver,
with its options in `convert_options`), `analyze`, `inspect` and `verify`. The CLI (edgeq.cli)
and scripts (edgeq.api) call these; they return values and never print."""
