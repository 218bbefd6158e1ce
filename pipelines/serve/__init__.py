"""``saliency serve``: a trained detector behind an HTTP API and a web page.

    saliency serve --model checkpoints/pipeline/unet            # http://127.0.0.1:7860/
    curl -s --data-binary @photo.jpg 'http://127.0.0.1:7860/api/predict?kind=mask' > mask.png

config.py holds the settings, server.py starts and stops uvicorn, app.py is the FastAPI
application (API, docs, page), batcher.py gathers concurrent requests into forward passes,
static/ is the page. docs/serving.md is the user's guide.
"""

from pipelines.serve.config import ServeConfig
from pipelines.serve.server import run_serve

__all__ = ["ServeConfig", "run_serve"]
