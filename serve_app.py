"""``serve run serve_app:app`` — wiring only: config in, Serve application out.

The config comes from ``$RAYGENT_CONFIG`` (or the embedded defaults) plus environment overrides;
an invalid config stops the deploy with a message naming each bad field.
"""

from runtime.config import load_config
from runtime.gateway import build_app

app = build_app(load_config())
