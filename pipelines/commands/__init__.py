"""One module per ``saliency`` command: its options, each declared once, and the lines it prints.

A command builds its stage's config from click's keyword arguments by field name
(``pipelines.options.config_from``) and hands it to the run module of the same name one level
up (``pipelines/discover.py``, ...), where the work is. ``pipelines/cli.py`` gathers them.
"""

from pipelines.commands.discover import discover_command
from pipelines.commands.eval import eval_command
from pipelines.commands.export import export_command
from pipelines.commands.fetch_data import fetch_data_command
from pipelines.commands.fetch_weights import fetch_weights_command
from pipelines.commands.generators import generators_command
from pipelines.commands.import_run import import_run_command
from pipelines.commands.pipeline import pipeline_command
from pipelines.commands.predict import predict_command
from pipelines.commands.report import report_command
from pipelines.commands.sample import sample_command
from pipelines.commands.serve import serve_command
from pipelines.commands.sweep import sweep_command
from pipelines.commands.synthesize import synthesize_command
from pipelines.commands.train_unet import train_unet_command
from pipelines.commands.vote import vote_command


COMMANDS = (discover_command, eval_command, export_command, fetch_data_command, fetch_weights_command,
            generators_command, import_run_command, pipeline_command, predict_command, report_command,
            sample_command, serve_command, sweep_command, synthesize_command, train_unet_command, vote_command)
