"""Ceilings on every setting that sizes an allocation (memory, disk, processes), and the named
ranges the configs declare their fields with.

A config field says ``bounded(STEPS, ...)``; the CLI builds the option's click type from the same
range (``pipelines/options.py: option_range``), checks it while parsing, before any model loads,
and shows it in ``--help`` (``[1<=x<=4096]``): an absurd value is one line, not a traceback from
the allocator, a kill by the kernel or an ETA of years. Each ceiling is well above any real use
(the paper's settings in brackets) and below what a 24 GB machine could hold; the arithmetic is
float32, 4 bytes a value.
"""

from __future__ import annotations

from saliency.core.fields import floats, ints

# Inference's shorter side (predict, eval). At 2,048 an image's input and the U-Net's
# full-resolution decoder map (16 channels) are 76 bytes a pixel: about 0.3 GB for a square
# image, before the encoder's maps. [128]
MAX_INFERENCE_SIDE = 2048
# Images a predict batch holds at once (batched by padded size; 8 by default).
MAX_PREDICT_BATCH = 256
# Generator image size, for generators that take one (scenes). [64]
MIN_RESOLUTION, MAX_RESOLUTION = 16, 1024
# Latents of one discovery or synthesis batch: two rendered batches of 3 x 128 x 128 float32
# images are 1.6 GB at 4,096, before the generator's activations. [32-256]
MAX_GAME_BATCH = 4096
# U-Net training batch: 1,024 pairs at 128 px, with the U-Net's activations and their gradients
# (hundreds of values a pixel), is several GB. [128]
MAX_TRAIN_BATCH = 1024
# Directions K: A is d x K and R has K outputs. [64-200]
MAX_DIRECTIONS = 4096
# Samples scored at once for the h_bg search: 4,096 images of 3 x 128 x 128 float32 are 0.8 GB. [128]
MAX_BG_SAMPLES = 4096
# RCA samples are scored 128 at a time (constant memory); the ceiling bounds the time. [2,048]
MAX_RCA_SAMPLES = 1_000_000
# Synthetic pairs on disk: about 64 KB a pair at 128 px, so 1,000,000 pairs are about 64 GB. [100,000]
MAX_PAIRS = 1_000_000
# Pairs held in memory before a shard is written: 16,384 at 128 px are about 1 GB. [1,024]
MAX_SHARD_SIZE = 16_384
# Training or refinement steps: no allocation grows with them, but an absurd count is a typo. [1e5-2e5]
MAX_STEPS = 10_000_000
MAX_REFINE_STEPS = 100_000
# Images rendered (sample's grid; eval's scenes set). [16; 500]
MAX_GRID_IMAGES = 1024
MAX_RENDERED_IMAGES = 100_000
# Classes each image votes for (ImageNet has 1,000).
MAX_TOP_K = 1000
# Held-out pairs scored at every validation. [512]
MAX_VAL_COUNT = 100_000
# DataLoader worker processes: each holds a copy of the loader's state.
MAX_WORKERS = 64
# Latent size of an imported deformator without weights. [128-512]
MAX_LATENT_DIM = 4096
# Decompression bombs: a file whose header declares more pixels is refused unread. A 200-megapixel
# camera photo passes; a few kilobytes of PNG that would decode to gigabytes do not.
MAX_IMAGE_PIXELS = 250_000_000
# `saliency serve`: an upload is held whole in memory while it is decoded, and each request in
# flight may hold one: MAX_QUEUE uploads of MAX_UPLOAD_MB. [defaults: 20 MB, 128 requests]
MAX_UPLOAD_MB = 1024
MAX_QUEUE = 4096
MAX_WAIT_MS = 10_000  # a lone request waits at most this long for others to share its pass
MAX_REQUEST_SECONDS = 3600
MAX_THREADS = 64  # decoding and encoding threads


# ------------------------------------------------------------------ named ranges
# Each range a config field allows, named once: the config declares its field with one
# (``bounded``), the CLI builds the option's click type from the same one (``option_range``).
COUNT = ints(1)  # a positive number of things (steps between checkpoints, log lines, ...)
NON_NEGATIVE_COUNT = ints(0)
POSITIVE = floats(0, low_open=True)  # a learning rate, a temperature, a shift
NON_NEGATIVE = floats(0)
FRACTION = floats(0, 1)  # a probability, an area share
POSITIVE_FRACTION = floats(0, 1, low_open=True)
RESOLUTION = ints(MIN_RESOLUTION, MAX_RESOLUTION)
STEPS = ints(1, MAX_STEPS)
REFINE_STEPS = ints(0, MAX_REFINE_STEPS)
GAME_BATCH = ints(1, MAX_GAME_BATCH)
TRAIN_BATCH = ints(1, MAX_TRAIN_BATCH)
DIRECTIONS = ints(1, MAX_DIRECTIONS)
BG_SAMPLES = ints(8, MAX_BG_SAMPLES)
RCA_SAMPLES = ints(8, MAX_RCA_SAMPLES)
PAIRS = ints(1, MAX_PAIRS)
SHARD_SIZE = ints(1, MAX_SHARD_SIZE)
TOP_K = ints(1, MAX_TOP_K)
VAL_COUNT = ints(0, MAX_VAL_COUNT)
WORKERS = ints(0, MAX_WORKERS)
GRID_IMAGES = ints(1, MAX_GRID_IMAGES)
OPEN_FRACTION = floats(0, 1, low_open=True, high_open=True)  # a cut that must split [0, 1]
INFERENCE_SIDE = ints(16, MAX_INFERENCE_SIDE)
PREDICT_BATCH = ints(1, MAX_PREDICT_BATCH)
RENDERED_IMAGES = ints(1, MAX_RENDERED_IMAGES)
LATENT_DIM = ints(1, MAX_LATENT_DIM)
IMAGE_PIXELS = ints(1, MAX_IMAGE_PIXELS)
UPLOAD_MB = ints(1, MAX_UPLOAD_MB)
QUEUE = ints(1, MAX_QUEUE)
WAIT_MS = floats(0, MAX_WAIT_MS)
REQUEST_SECONDS = floats(0, MAX_REQUEST_SECONDS, low_open=True)
THREADS = ints(1, MAX_THREADS)
PORT = ints(0, 65535)  # 0: any free port (the start-up line says which)
# Seeds: what every random stream the project seeds takes (NumPy's legacy RandomState and
# torch's manual_seed both take 0 .. 2**32 - 1).
SEED = ints(0, 2**32 - 1)
# ONNX opsets torch's TorchScript exporter (the one `saliency export` uses) writes: 13 (the
# oldest the graph's ops need) to 20 (torch.onnx's ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET; checked
# by tests/test_saliency/test_unet.py).
OPSET = ints(13, 20)
