"""gradio's and huggingface_hub's environment for `scadm serve`, the one place it is set.

Both read these variables when they are imported, so every serve module that imports gradio (app,
layout, callbacks) imports this module first, above its third-party imports: whichever of them
is imported first, the page never sends telemetry and never reaches for the Hub. `setdefault`
leaves a value the user set alone.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never download
