"""`scadm serve`: the interactive face editor. `editor` is the logic (no web framework needed,
the CLI replays its settings); `app` builds the gradio page (imports gradio) from `layout` (the
components) and `callbacks` (what the events run), which show faces through `views`."""
