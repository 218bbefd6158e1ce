"""One module per ``saliency`` command: its options, each declared once, and the lines it prints.

A command builds its stage's config from click's keyword arguments by field name
(``pipelines.options.config_from``) and hands it to the run module of the same name one level
up (``pipelines/discover.py``, ...), where the work is. ``pipelines/cli.py`` gathers them.
"""

from pipelines.commands.discover import discover
from pipelines.commands.eval import eval_command
from pipelines.commands.export import export
from pipelines.commands.fetch_data import fetch_data
from pipelines.commands.fetch_weights import fetch_weights
from pipelines.commands.generators import generators
from pipelines.commands.import_run import import_run
from pipelines.commands.pipeline import pipeline
from pipelines.commands.predict import predict
from pipelines.commands.report import report
from pipelines.commands.sample import sample
from pipelines.commands.serve import serve
from pipelines.commands.sweep import sweep
from pipelines.commands.synthesize import synthesize
from pipelines.commands.train_unet import train_unet
from pipelines.commands.vote import vote

COMMANDS = (discover, eval_command, export, fetch_data, fetch_weights, generators, import_run, pipeline, predict,
            report, sample, serve, sweep, synthesize, train_unet, vote)
