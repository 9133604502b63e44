"""`scadm serve`: the interactive face editor. `editor` is the logic (no web framework needed,
the CLI replays its settings); `app` builds the gradio page and imports gradio."""
