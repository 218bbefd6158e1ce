"""The bad-input matrix: the real CLI, a process per case, on inputs broken one way each.

Every case must end with one stderr line that names the problem (and the file), a non-zero
exit, no traceback, nothing in its output folder that a later run would trust, and every
prepared input byte-for-byte as it was. The processes run a few at a time (each case's
thread only waits on its own process), forked from a server that imported torch and the
project once (tests/support/cli_forkserver.py): the imports were most of the matrix's time.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
import shutil
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_forkserver import ForkServer
from conftest import REPO, assert_one_line_error
from makers import constant_model, fixture_dataset, flip_bit, known_direction_run, synthesize_pairs, truncate

COMPLETE_MARKERS = ("directions.json", "manifest.json", "model.json", "metrics.json", "pipeline.json")
TINY_DISCOVER = ("--resolution 32 --train-resolution 32 --directions 4 --batch 8 --bg-samples 16 --refine-steps 10 "
                 "--no-charts --no-refine-bg --device cpu")
TINY_UNET = "--encoder resnet18 --batch 4 --val-count 16 --workers 0 --device cpu"
SYN = "--classes 0 --device cpu"
EVAL = "eval --dataset ecssd --device cpu --out {out}"


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # after `saliency`; {name} is a prepared input, {out} this case's own output path
    needles: tuple[str, ...] = ()
    file_limit: int | None = None  # bytes any one file may reach (ulimit -f): a disk that fills up
    page: bool = False  # the command must not fail: it writes {out}.html, whose text holds the needles


CASES = [
    # ---------------------------------------------------------------- sample and the CLI itself
    Case("cli/unknown-command", "no-such-command", ("no-such-command",)),
    Case("sample/missing-out", "sample", ("--out",)),
    Case("sample/unknown-generator", "sample --generator nope --out {out}.png", ("unknown generator",)),
    Case("sample/unimportable-generator", "sample --generator :nothing --out {out}.png", ("cannot import",)),
    Case("sample/n-zero", "sample --n 0 --out {out}.png", ("--n",)),
    Case("sample/n-negative", "sample --n -3 --out {out}.png", ("--n",)),
    Case("sample/n-not-a-number", "sample --n many --out {out}.png", ("--n",)),
    Case("sample/out-under-a-file", "sample --out {file}/x.png", ("{file}",)),
    Case("sample/out-not-png", "sample --out {out}.jpg", (".png",)),
    Case("sample/class-out-of-range", "sample --classes 0,99 --out {out}.png", ("out of range",)),
    Case("sample/classes-not-integers", "sample --classes zero --out {out}.png", ("integers",)),
    Case("sample/unknown-device", "sample --device quantum --out {out}.png", ("device",)),
    Case("sample/resolution-too-small", "sample --resolution 4 --out {out}.png", ("--resolution",)),
    Case("sample/truncation-for-scenes", "sample --truncation 0.5 --out {out}.png", ("--truncation",)),
    Case("sample/biggan-without-weights", "sample --generator biggan-deep-128 --out {out}.png", ("--weights DIR",)),
    Case("sample/dcgan-weights-not-a-checkpoint", "sample --generator dcgan-faces --weights {file} --out {out}.png",
         ("{file}", "not a PyTorch weights file")),
    Case("sample/dcgan-weights-run-code", "sample --generator dcgan-faces --weights {evil} --out {out}.png",
         ("{evil}", "could run code")),
    Case("sample/unwritable-out", "sample --n 2 --out {unwritable}/grid.png", ("{unwritable}",)),
    # ---------------------------------------------------------------------------- discover
    Case("discover/unknown-generator", "discover --generator nope --out {out}", ("unknown generator",)),
    Case("discover/unknown-deformator", "discover --deformator spiral --out {out}", ("spiral",)),
    Case("discover/more-directions-than-latents", "discover --directions 40 --resolution 32 --out {out}",
         ("at most d = 32",)),
    Case("discover/steps-zero", "discover --steps 0 --out {out}", ("--steps",)),
    Case("discover/batch-negative", "discover --batch -2 --out {out}", ("--batch",)),
    Case("discover/lr-zero", "discover --lr 0 --out {out}", ("--lr",)),
    Case("discover/checkpoint-every-zero", "discover --checkpoint-every 0 --out {out}", ("--checkpoint-every",)),
    Case("discover/resolution-too-small", "discover --resolution 8 --out {out}", ("--resolution",)),
    Case("discover/bg-direction-syntax", "discover --bg-direction x:y --out {out}", ("--bg-direction",)),
    Case("discover/biggan-without-weights", "discover --generator biggan-deep-128 --out {out}", ("--weights DIR",)),
    Case("discover/out-is-a-file", "discover --out {file}", ("{file}",)),
    Case("discover/out-under-a-file", "discover --out {file}/run", ("{file}",)),
    Case("discover/unwritable-out", f"discover --out {{unwritable}}/run --steps 3 {TINY_DISCOVER}", ("{unwritable}",)),
    Case("discover/resume-without-checkpoint", "discover --out {out} --resume", ("no discovery checkpoint",)),
    Case("discover/finished-run-without-resume", f"discover --out {{run_tiny}} --steps 3 {TINY_DISCOVER}",
         ("--resume",)),
    Case("discover/resume-as-another-generator",
         "discover --out {run_tiny} --resume --generator dcgan-faces --weights {file}", ("scenes",)),
    Case("discover/resume-with-other-settings",
         f"discover --out {{run_tiny}} --resume --steps 3 {TINY_DISCOVER} --deformator unit", ("other settings",)),
    Case("discover/bg-direction-out-of-range",
         f"discover --out {{run_tiny}} --resume --steps 3 {TINY_DISCOVER} --bg-direction 9", ("directions 0..3",)),
    Case("discover/checkpoint-garbage", "discover --out {run_garbage_checkpoint} --resume",
         ("corrupted", "checkpoint.safetensors")),
    Case("discover/checkpoint-truncated", "discover --out {run_torn_checkpoint} --resume",
         ("corrupted", "checkpoint.safetensors")),
    Case("discover/checkpoint-bit-flipped", "discover --out {run_flipped_checkpoint} --resume",
         ("corrupted", "checkpoint.safetensors")),
    Case("discover/disk-full", f"discover --out {{out}} --steps 20 --checkpoint-every 5 {TINY_DISCOVER}",
         ("disk full", "checkpoint.safetensors"), file_limit=16_000),
    # -------------------------------------------------------------------------- synthesize
    Case("synthesize/n-zero", f"synthesize --run {{run}} --n 0 --out {{out}} {SYN}", ("--n",)),
    Case("synthesize/batch-zero", f"synthesize --run {{run}} --n 5 --out {{out}} {SYN} --batch 0", ("--batch",)),
    Case("synthesize/threshold-above-one", f"synthesize --run {{run}} --n 5 --out {{out}} {SYN} --threshold 1.5",
         ("threshold",)),
    Case("synthesize/area-bounds-crossed", f"synthesize --run {{run}} --n 5 --out {{out}} {SYN} --min-area 0.6",
         ("area",)),
    Case("synthesize/shift-negative", f"synthesize --run {{run}} --n 5 --out {{out}} {SYN} --shift -1", ("--shift",)),
    Case("synthesize/class-out-of-range", "synthesize --run {run} --n 5 --out {out} --classes 10 --device cpu",
         ("out of range",)),
    Case("synthesize/unknown-classifier", "synthesize --run {run} --n 5 --out {out} --classifier nope "
         "--data-root {root} --device cpu", ("nope",)),
    Case("synthesize/run-missing", f"synthesize --run {{empty}}/nope --n 5 --out {{out}} {SYN}", ("not a finished",)),
    Case("synthesize/run-without-h-bg", f"synthesize --run {{run_no_bg}} --n 5 --out {{out}} {SYN}", ("no h_bg",)),
    Case("synthesize/run-h-bg-unreliable", f"synthesize --run {{run_unreliable}} --n 5 --out {{out}} {SYN}",
         ("unreliable",)),
    Case("synthesize/run-without-tensors", f"synthesize --run {{run_no_tensors}} --n 5 --out {{out}} {SYN}",
         ("directions.safetensors",)),
    Case("synthesize/run-tensors-truncated", f"synthesize --run {{run_torn_tensors}} --n 5 --out {{out}} {SYN}",
         ("corrupted", "directions.safetensors")),
    Case("synthesize/run-summary-truncated", f"synthesize --run {{run_torn_summary}} --n 5 --out {{out}} {SYN}",
         ("directions.json",)),
    Case("synthesize/run-from-another-generator", "synthesize --run {run_other_generator} --n 5 --out {out} "
         "--classes 0 --device cpu", ("directions.safetensors", "latents have 100")),
    Case("synthesize/out-is-a-file", f"synthesize --run {{run}} --n 5 --out {{file}} {SYN}", ("{file}",)),
    Case("synthesize/unwritable-out", f"synthesize --run {{run}} --n 5 --out {{unwritable}}/syn {SYN}",
         ("{unwritable}",)),
    Case("synthesize/out-with-other-settings",
         "synthesize --run {run} --n 300 --out {pairs} --classes 0,1,2 --device cpu --threshold 0.9",
         ("other settings",)),
    Case("synthesize/out-with-corrupted-progress",
         "synthesize --run {run} --n 300 --out {syn_torn_progress} --classes 0,1,2 --batch 64 --shard-size 128 "
         "--device cpu", ("progress.json", "corrupted")),
    Case("synthesize/vote-dataset-missing", "synthesize --run {run} --n 5 --out {out} --data-root {empty} "
         "--device cpu", ("ECSSD is not in", "cannot be reached", "--from DIR")),
    Case("synthesize/vote-image-without-mask", "synthesize --run {run} --n 5 --out {out} --data-root {root_no_mask} "
         "--device cpu", ("without a mask", "0003")),
    Case("synthesize/vote-truncated-jpeg", "synthesize --run {run} --n 5 --out {out} --data-root {root_torn_jpeg} "
         "--device cpu", ("0001.jpg",)),
    Case("synthesize/vote-bit-flipped-jpeg", "synthesize --run {run} --n 5 --out {out} "
         "--data-root {root_flipped_jpeg} --device cpu", ("0001.jpg",)),
    Case("synthesize/vote-decompression-bomb", "synthesize --run {run} --n 5 --out {out} --data-root {root_bomb} "
         "--device cpu", ("0001.png", "pixels")),
    Case("synthesize/classifier-weights-run-code", "synthesize --run {run} --n 5 --out {out} --data-root {root} "
         "--classifier resnet18-imagenet --classifier-weights {evil} --device cpu", ("{evil}", "could run code")),
    Case("synthesize/disk-full", "synthesize --run {run} --n 300 --out {out} --classes 0,1,2 --batch 64 "
         "--shard-size 128 --device cpu", ("disk full", "shard-00000"), file_limit=100_000),
    # ------------------------------------------------------------------------- train-unet
    Case("train-unet/data-missing", f"train-unet --data {{empty}}/none --out {{out}} {TINY_UNET}",
         ("not a finished synthetic dataset",)),
    Case("train-unet/data-manifest-truncated", f"train-unet --data {{pairs_torn_manifest}} --out {{out}} {TINY_UNET}",
         ("manifest.json",)),
    Case("train-unet/data-shard-bit-flipped", f"train-unet --data {{pairs_flipped_shard}} --out {{out}} {TINY_UNET}",
         ("corrupted", "shard-00001")),
    Case("train-unet/data-shard-missing", f"train-unet --data {{pairs_missing_shard}} --out {{out}} {TINY_UNET}",
         ("shard-00002",)),
    Case("train-unet/steps-zero", f"train-unet --data {{pairs}} --out {{out}} {TINY_UNET} --steps 0", ("--steps",)),
    Case("train-unet/batch-zero", "train-unet --data {pairs} --out {out} --device cpu --batch 0", ("--batch",)),
    Case("train-unet/lr-negative", f"train-unet --data {{pairs}} --out {{out}} {TINY_UNET} --lr -1", ("--lr",)),
    Case("train-unet/temperature-zero", f"train-unet --data {{pairs}} --out {{out}} {TINY_UNET} --temperature 0",
         ("--temperature",)),
    Case("train-unet/val-count-above-data", "train-unet --data {pairs} --out {out} --device cpu --val-count 5000",
         ("--val-count",)),
    Case("train-unet/unknown-encoder", "train-unet --data {pairs} --out {out} --device cpu --encoder no-such-encoder",
         ("no-such-encoder",)),
    Case("train-unet/unknown-profile", "train-unet --data {pairs} --out {out} --profile nope", ("nope",)),
    Case("train-unet/resume-without-checkpoint", f"train-unet --data {{pairs}} --out {{out}} {TINY_UNET} --resume",
         ("--resume",)),
    Case("train-unet/finished-run-without-resume", f"train-unet --data {{pairs}} --out {{unet_run}} {TINY_UNET} "
         "--steps 2", ("--resume",)),
    Case("train-unet/resume-on-other-data", f"train-unet --data {{pairs_other}} --out {{unet_run}} {TINY_UNET} "
         "--steps 4 --resume", ("other settings or data",)),
    Case("train-unet/checkpoint-bit-flipped", f"train-unet --data {{pairs}} --out {{unet_flipped_checkpoint}} "
         f"{TINY_UNET} --steps 4 --resume", ("corrupted", "checkpoint.safetensors")),
    Case("train-unet/unwritable-out", f"train-unet --data {{pairs}} --out {{unwritable}}/unet {TINY_UNET}",
         ("{unwritable}",)),
    Case("train-unet/disk-full", f"train-unet --data {{pairs}} --out {{out}} {TINY_UNET} --steps 2 "
         "--checkpoint-every 1 --val-every 1", ("disk full", "checkpoint.safetensors"), file_limit=1_000_000),
    # ------------------------------------------------------------------------------- eval
    Case("eval/unknown-dataset", "eval --dataset nope --model {model} --out {out}", ("unknown dataset",)),
    Case("eval/model-missing", EVAL + " --model {empty}/missing --data-root {root}", ("not found",)),
    Case("eval/folder-without-a-model", EVAL + " --model {pairs} --data-root {root}", ("no trained model",)),
    Case("eval/model-of-another-architecture", EVAL + " --model {model_other_arch} --data-root {root}",
         ("does not fit",)),
    Case("eval/model-weights-truncated", EVAL + " --model {model_torn_weights} --data-root {root}",
         ("model.safetensors",)),
    Case("eval/model-json-truncated", EVAL + " --model {model_torn_json} --data-root {root}", ("model.json",)),
    Case("eval/dataset-missing", EVAL + " --model {model} --data-root {empty}", ("ECSSD is not in", "--from DIR")),
    Case("eval/wrong-layout", EVAL + " --model {model} --data-root {root_wrong_layout}", ("ground_truth_mask",)),
    Case("eval/test-split-empty", EVAL + " --model {model} --data-root {root_single}", ("test split is empty",)),
    Case("eval/mask-size-mismatch", EVAL + " --model {model} --data-root {root_mismatched}", ("0003",)),
    Case("eval/truncated-jpeg", EVAL + " --model {model} --data-root {root_torn_jpeg}", ("0001.jpg",)),
    Case("eval/bit-flipped-png-mask", EVAL + " --model {model} --data-root {root_flipped_png}", ("0002.png",)),
    Case("eval/decompression-bomb", EVAL + " --model {model} --data-root {root_bomb}", ("0001.png", "pixels")),
    Case("eval/size-too-small", EVAL + " --model {model} --data-root {root} --size 4", ("--size",)),
    Case("eval/protocol-unknown", EVAL + " --model {model} --data-root {root} --protocol reference",
         ("--protocol",)),
    Case("eval/scenes-images-zero", "eval --dataset scenes --model {model} --out {out} --images 0 --device cpu",
         ("--images",)),
    Case("eval/unwritable-out", "eval --dataset ecssd --model {model} --out {unwritable}/eval --data-root {root} "
         "--device cpu", ("{unwritable}",)),
    # ------------------------------------------------------- published generators, sweep, import-run
    Case("sample/sngan-weights-missing", "sample --generator sngan-mnist --weights {empty}/none --out {out}.png",
         ("{empty}/none", "not found")),
    Case("sample/sngan-weights-run-code", "sample --generator sngan-mnist --weights {evil} --out {out}.png",
         ("{evil}", "could run code")),
    Case("sample/sngan-anime-without-weights", "sample --generator sngan-anime --out {out}.png", ("--weights",)),
    Case("sample/proggan-not-a-checkpoint", "sample --generator proggan-celebahq --weights {file} --out {out}.png",
         ("{file}", "not a PyTorch weights file")),
    Case("sample/stylegan2-run-code", "sample --generator stylegan2 --weights {evil} --out {out}.png",
         ("{evil}", "could run code")),
    Case("sample/biggan128-other-layout", "sample --generator biggan-128 --weights {proggan_weights} --out {out}.png",
         ("{proggan_weights}", "BigGAN-PyTorch's layout")),
    Case("sample/latent-space-for-scenes", "sample --latent-space z --out {out}.png", ("--latent-space",)),
    Case("discover/shift-loss-weight-negative", "discover --shift-loss-weight -1 --out {out}", ("--shift-loss-weight",)),
    Case("synthesize/run-discovered-without-bg-search", "synthesize --run {run_no_bg_search} --n 5 --out {out} " + SYN,
         ("no h_bg", "--no-bg-search")),
    Case("sweep/unknown-key", "sweep --out {out} --vary flavour=1,2", ("--flavour",)),
    Case("sweep/value-out-of-range", "sweep --out {out} --vary directions=8,0", ("directions=0",)),
    Case("sweep/unknown-forwarded-option", "sweep --out {out} --vary directions=8 --flux 2", ("--flux",)),
    Case("sweep/seeds-not-integers", "sweep --out {out} --vary directions=8 --seeds a,b", ("integers",)),
    Case("sweep/out-is-a-file", f"sweep --out {{file}} --vary directions=4 {TINY_DISCOVER} --steps 2", ("{file}",)),
    Case("import-run/not-a-run", "import-run {empty} --out {out}", ("args.json",)),
    Case("import-run/deformator-run-code", "import-run {ref_run_evil} --out {out} --bg-direction 1 "
         "--generator scenes", ("deformator_10.pt", "could run code")),
    Case("import-run/deformator-truncated", "import-run {ref_run_torn} --out {out} --bg-direction 1 "
         "--generator scenes", ("deformator_10.pt",)),
    Case("import-run/bg-direction-out-of-range", "import-run {ref_run} --out {out} --bg-direction 99 "
         "--generator scenes", ("directions 0..",)),
    Case("import-run/bg-direction-zero-magnitude", "import-run {ref_run} --out {out} --bg-direction 2:0 "
         "--generator scenes", ("non-zero magnitude",)),
    Case("import-run/unknown-gan-type", "import-run {ref_run} --out {out} --bg-direction 1", ("gan_type",)),
    Case("import-run/weights-for-a-generator-without-any", "import-run {ref_run} --out {out} --bg-direction 1 --generator scenes "
         "--weights {file}", ("does not take --weights",)),
    # ---------------------------------------------------------------------------- report
    Case("report/empty-folder", "report {empty}", ("{empty}", "holds no run")),
    Case("report/a-file", "report {file}", ("{file}", "is a file")),
    Case("report/missing-folder", "report {empty}/nothing", ("{empty}/nothing", "does not exist")),
    Case("report/out-is-a-folder", "report {pairs} --out {empty}", ("{empty}", "is a directory")),
    # a run missing parts is a page that says so, not an error
    Case("report/damaged-json", "report {model_torn_json} --out {out}.html", ("U-Net: model.json is damaged",),
         page=True),
    Case("report/pictures-deleted", "report {pairs} --out {out}.html", ("pairs preview: preview.png is missing",),
         page=True),
    # --------------------------------------------------------------------------- pipeline
    Case("pipeline/dataset-missing", "pipeline --out {out} --data-root {empty}", ("ECSSD",)),
    Case("pipeline/unknown-profile", "pipeline --out {out} --data-root {root} --profile nope", ("nope",)),
    Case("pipeline/biggan-without-weights", "pipeline --out {out} --data-root {root} --profile biggan",
         ("--weights",)),
    Case("pipeline/paper-without-weights-offline", "pipeline --out {out} --data-root {root} --profile paper",
         ("biggan-128-authors",)),
    Case("pipeline/paper-weights-missing", "pipeline --out {out} --data-root {root} --profile paper "
         "--weights {empty}/G_ema.pth", ("G_ema.pth", "not found")),
    Case("pipeline/pairs-zero", "pipeline --out {out} --data-root {root} --pairs 0", ("--pairs",)),
    Case("pipeline/unet-steps-negative", "pipeline --out {out} --data-root {root} --unet-steps -5",
         ("--unet-steps",)),
    Case("pipeline/out-is-a-file", "pipeline --out {file} --data-root {root}", ("{file}",)),
    Case("pipeline/unwritable-out", "pipeline --out {unwritable}/pipe --data-root {root}", ("{unwritable}",)),
    # ------------------------------------------------------------------------- fetch-data
    Case("fetch-data/unknown-dataset", "fetch-data nope --data-root {out}", ("unknown dataset",)),
    Case("fetch-data/mirror-not-http", "fetch-data ecssd --data-root {out} --mirror file:///etc/", ("--mirror",)),
    Case("fetch-data/already-there", "fetch-data ecssd --data-root {root}", ("already exists",)),
    Case("fetch-data/from-and-mirror", "fetch-data ecssd --data-root {out} --from {empty} --mirror http://x/",
         ("--from and --mirror",)),
    Case("fetch-data/from-empty-folder", "fetch-data ecssd --data-root {out} --from {empty}", ("images.zip",)),
    # ------------------------------------------------------------------------- predict
    Case("predict/not-a-model", "predict {root} --model {empty} --out {out} --device cpu", ("{empty}",)),
    Case("predict/model-torn-weights", "predict {root} --model {model_torn_weights} --out {out} --device cpu",
         ("model.safetensors",)),
    Case("predict/model-torn-json", "predict {root} --model {model_torn_json} --out {out} --device cpu",
         ("model.json",)),
    Case("predict/model-other-architecture", "predict {root} --model {model_other_arch} --out {out} --device cpu",
         ("{model_other_arch}",)),
    Case("predict/hub-id-offline", "predict {root} --model nobody/no-such-model --out {out} --device cpu",
         ("nobody/no-such-model",)),
    Case("predict/no-images", "predict {empty} --model {model} --out {out} --device cpu", ("no images",)),
    Case("predict/missing-input", "predict {empty}/nothing.jpg --model {model} --out {out} --device cpu",
         ("no such file",)),
    Case("predict/unknown-kind", "predict {root} --model {model} --out {out} --save map,thumbnail --device cpu",
         ("thumbnail",)),
    Case("predict/threshold-out-of-range", "predict {root} --model {model} --out {out} --threshold 1.5",
         ("--threshold",)),
    Case("predict/size-above-ceiling", "predict {root} --model {model} --out {out} --size 99999", ("--size",)),
    Case("predict/batch-zero", "predict {root} --model {model} --out {out} --batch 0", ("--batch",)),
    Case("predict/out-is-a-file", "predict {root} --model {model} --out {file} --device cpu", ("{file}",)),
    Case("predict/out-inside-input", "predict {root} --model {model} --out {root}/maps --device cpu",
         ("lies inside the input folder",)),
    Case("predict/unknown-device", "predict {root} --model {model} --out {out} --device quantum", ("device",)),
    Case("serve/not-a-model", "serve --model {empty} --port 0 --device cpu", ("{empty}",)),
    Case("serve/model-torn-weights", "serve --model {model_torn_weights} --port 0 --device cpu",
         ("{model_torn_weights}",)),
    Case("serve/host-not-of-this-machine", "serve --model {model} --host 192.0.2.1 --port 0 --device cpu",
         ("cannot listen on 192.0.2.1:0",)),
    Case("serve/port-above-range", "serve --model {model} --port 70000", ("--port",)),
    Case("serve/upload-limit-above-ceiling", "serve --model {model} --max-upload-mb 5000", ("--max-upload-mb",)),
    Case("serve/negative-wait", "serve --model {model} --max-wait-ms -1", ("--max-wait-ms",)),
    Case("serve/zero-timeout", "serve --model {model} --timeout 0", ("--timeout",)),
    # ------------------------------------------------------------------------- export
    Case("export/not-a-model", "export --model {empty} --out {out}.onnx", ("{empty}",)),
    Case("export/model-torn-weights", "export --model {model_torn_weights} --out {out}.onnx", ("model.safetensors",)),
    Case("export/out-not-onnx", "export --model {model} --out {out}.txt", (".onnx",)),
    Case("export/out-folder-missing", "export --model {model} --out {empty}/no/such/m.onnx", ("does not exist",)),
    Case("export/opset-too-low", "export --model {model} --out {out}.onnx --opset 5", ("--opset",)),
    # ------------------------------------------------------------------------- vote
    Case("vote/unknown-classifier", "vote --classifier vgg --out {out}.json --data-root {root}", ("vgg",)),
    Case("vote/dataset-missing", "vote --classifier scenes-shapes --out {out}.json --data-root {empty}",
         ("ECSSD is not in", "--from DIR")),
    Case("vote/top-k-zero", "vote --classifier scenes-shapes --out {out}.json --data-root {root} --top-k 0",
         ("--top-k",)),
    Case("vote/truncated-jpeg", "vote --classifier scenes-shapes --out {out}.json --data-root {root_torn_jpeg} "
         "--device cpu", ("0001.jpg",)),
    Case("vote/classifier-weights-run-code", "vote --classifier mobilenet-v2-imagenet --classifier-weights {evil} "
         "--out {out}.json --data-root {root} --device cpu", ("{evil}",)),
    # ------------------------------------------------------------------------- fetch-weights
    Case("fetch-weights/unknown-name", "fetch-weights nope", ("unknown weights",)),
    Case("fetch-weights/from-missing", "fetch-weights mobilenet-v2-imagenet --from {empty}/x.tflite",
         ("{empty}/x.tflite", "not found")),
    Case("fetch-weights/from-another-file", "fetch-weights resnet18-imagenet --from {file}", ("sha256",)),
    Case("fetch-weights/url-not-http", "fetch-weights resnet18-imagenet --url file:///etc/passwd", ("http(s)",)),
    Case("fetch-weights/from-with-two-names", "fetch-weights mobilenet-v2-imagenet resnet18-imagenet --from {file}",
         ("one NAME",)),
    Case("fetch-weights/mirror-unreachable", "fetch-weights resnet18-imagenet", ("resnet18-f37072fd.pth",)),
    # ------------------------------------------------------------------------- sweep, import-run
    Case("sweep/steps-above-ceiling", "sweep --out {out} --vary steps=10,99999999", ("steps",)),
    Case("import-run/latent-dim-above-ceiling", "import-run {ref_run} --out {out} --latent-dim 99999",
         ("--latent-dim",)),
    # ------------------------------------------- files nobody here wrote (issue 34's findings)
    Case("synthesize/run-names-code", f"synthesize --run {{run_names_code}} --n 5 --out {{out}} {SYN}",
         ("os:system", "by import path", "--generator")),
    Case("synthesize/run-json-a-list", f"synthesize --run {{run_list_json}} --n 5 --out {{out}} {SYN}",
         ("directions.json", "a list, not an object")),
    Case("predict/model-json-a-list", "predict {root} --model {model_list_json} --out {out} --device cpu",
         ("model.json", "a list, not an object")),
    Case("eval/model-json-a-list", EVAL + " --model {model_list_json} --data-root {root}",
         ("model.json", "a list, not an object")),
    Case("export/model-json-a-list", "export --model {model_list_json} --out {out}.onnx",
         ("model.json", "a list, not an object")),
    Case("pipeline/record-a-list", "pipeline --out {pipeline_list_record} --data-root {root}",
         ("pipeline.json", "a list, not an object")),
    Case("train-unet/shard-without-file", f"train-unet --data {{pairs_shard_without_file}} --out {{out}} {TINY_UNET}",
         ("manifest.json", "shards[0] has no 'file'")),
    Case("train-unet/shard-outside-its-folder", f"train-unet --data {{pairs_shard_outside}} --out {{out}} {TINY_UNET}",
         ("manifest.json", "outside its folder")),
    Case("vote/classifier-weights-integer-key", "vote --classifier resnet18-imagenet --classifier-weights "
         "{classifier_int_key} --out {out}.json --data-root {root} --device cpu", ("{classifier_int_key}", "not a named tensor")),
    Case("vote/scenes-classifier-without-input-size", "vote --classifier scenes-shapes --classifier-weights "
         "{scenes_classifier_no_size} --out {out}.json --data-root {root} --device cpu", ("model.json", "input_size")),
    Case("fetch-data/zip-bad-crc", "fetch-data ecssd --data-root {out} --from {zip_bad_crc}",
         ("images.zip", "Bad CRC-32")),
    # Found by the long fuzz run (cli family): a path holding a carriage return or newline
    # printed raw broke the one line; every message now writes control characters escaped.
    Case("train-unet/data-path-with-control-characters", "train-unet --data 'no\rsuch\nfolder' --out {out} " + TINY_UNET,
         ("no\\rsuch\\nfolder",)),
    Case("export/opset-above-exporter", "export --model {model} --out {out}.onnx --opset 99", ("--opset",)),
    Case("sample/seed-huge", "sample --seed 99999999999999999999999 --out {out}.png", ("--seed",)),
    Case("sample/seed-negative", "sample --seed -1 --out {out}.png", ("--seed",)),
]


class _RunsCode:
    """Unpickling this would create a file: the proof that a loader ran code from data."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _unwritable_folder(tmp: Path) -> Path | None:
    """A folder no file can be created under, even by root (who ignores permission bits)."""
    if os.geteuid() != 0:
        folder = tmp / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    probe = Path("/sys/gan-saliency-unwritable")  # sysfs refuses new folders to everyone
    try:
        probe.mkdir()
    except OSError:
        return probe
    probe.rmdir()
    return None


def _prepare(base: Path) -> dict[str, Path]:
    """Every input the cases refer to, each broken in one way."""
    from pipelines.discover import DiscoverConfig, run_discover
    from pipelines.train_unet import TrainUNetConfig, run_train_unet

    p: dict[str, Path] = {"empty": base / "empty", "file": base / "a-file"}
    p["empty"].mkdir(parents=True)
    p["file"].write_text("not a folder")
    p["evil"] = base / "evil.pth"
    p["evil"].write_bytes(pickle.dumps({"state_dict": _RunsCode(str(base / "code-ran"))}, protocol=2))

    # Run folders: a known h_bg, then copies broken one way each.
    run = p["run"] = known_direction_run(base / "run")
    for name in ("no_bg", "unreliable", "no_tensors", "torn_tensors", "torn_summary", "other_generator"):
        p[f"run_{name}"] = Path(shutil.copytree(run, base / f"run-{name}"))
    summary = json.loads((run / "directions.json").read_text())
    (p["run_no_bg"] / "directions.json").write_text(json.dumps({k: v for k, v in summary.items()
                                                               if k != "bg_direction"}))
    (p["run_unreliable"] / "directions.json").write_text(json.dumps(
        {**summary, "bg_direction": {**summary["bg_direction"], "reliable": False}}))
    (p["run_no_tensors"] / "directions.safetensors").unlink()
    truncate(p["run_torn_tensors"] / "directions.safetensors")
    truncate(p["run_torn_summary"] / "directions.json")
    (p["run_other_generator"] / "directions.json").write_text(json.dumps(
        {**summary, "generator": "dcgan-faces", "generator_options": {}}))

    # A finished (tiny) discovery run with its checkpoint, and damaged checkpoints.
    p["run_tiny"] = base / "run-tiny"
    run_discover(DiscoverConfig(generator="scenes", out=p["run_tiny"], num_directions=4, steps=3, batch_size=8,
                                bg_samples=16, rca_samples=64, refine_bg=False, charts=False, progress=False,
                                device="cpu", train_resolution=32, generator_options={"resolution": 32}))
    for name in ("garbage", "torn", "flipped"):
        folder = p[f"run_{name}_checkpoint"] = base / f"run-{name}-checkpoint"
        folder.mkdir()
        shutil.copy(p["run_tiny"] / "checkpoint.safetensors", folder)
    (p["run_garbage_checkpoint"] / "checkpoint.safetensors").write_bytes(b"\x10" + b"\x00" * 7 + b"{not json}" * 8)
    truncate(p["run_torn_checkpoint"] / "checkpoint.safetensors")
    flip_bit(p["run_flipped_checkpoint"] / "checkpoint.safetensors", 20)  # inside the JSON header

    # A run without h_bg (--no-bg-search), and runs of the reference code to import.
    p["run_no_bg_search"] = base / "run-no-bg-search"
    run_discover(DiscoverConfig(generator="scenes", out=p["run_no_bg_search"], num_directions=4, steps=2,
                                batch_size=8, rca_samples=16, charts=False, progress=False, device="cpu",
                                bg_search=False, generator_options={"resolution": 32}))
    from published_layouts import proggan_state, write_reference_run

    for name in ("", "_evil", "_torn"):
        p[f"ref_run{name}"] = write_reference_run(base / f"ref-run{name}", "ortho", 32, 32, gan_type="Custom",
                                                  steps=(10,))
    shutil.copy(p["evil"], p["ref_run_evil"] / "models" / "deformator_10.pt")
    truncate(p["ref_run_torn"] / "models" / "deformator_10.pt")
    p["proggan_weights"] = base / "proggan.pth"
    torch.save(proggan_state((8, 8)), p["proggan_weights"])

    # Synthetic pairs (300 at 32 px, shards of 128), then damaged copies.
    p["pairs"] = base / "pairs"
    synthesize_pairs(run, p["pairs"], 300, preview=0)
    p["pairs_other"] = base / "pairs-other"
    synthesize_pairs(run, p["pairs_other"], 300, preview=0, seed=1)
    for name in ("torn_manifest", "flipped_shard", "missing_shard"):
        p[f"pairs_{name}"] = Path(shutil.copytree(p["pairs"], base / f"pairs-{name}"))
    truncate(p["pairs_torn_manifest"] / "manifest.json")
    flip_bit(p["pairs_flipped_shard"] / "shard-00001.safetensors", -100)
    (p["pairs_missing_shard"] / "shard-00002.safetensors").unlink()
    p["syn_torn_progress"] = base / "syn-torn-progress"  # a killed synthesis whose record was cut short
    synthesize_pairs(run, p["syn_torn_progress"], 300, preview=0)
    (p["syn_torn_progress"] / "manifest.json").unlink()
    truncate(p["syn_torn_progress"] / "progress.json")

    # A U-Net run (2 steps) and a copy with a flipped checkpoint; models for eval.
    p["unet_run"] = base / "unet-run"
    run_train_unet(TrainUNetConfig(data=p["pairs"], out=p["unet_run"], encoder="resnet18", batch_size=4, steps=2,
                                   val_count=16, val_every=2, checkpoint_every=1, workers=0, device="cpu",
                                   progress=False))
    p["unet_flipped_checkpoint"] = base / "unet-flipped-checkpoint"  # a run killed mid-training, then damaged
    p["unet_flipped_checkpoint"].mkdir()
    for name in ("checkpoint.safetensors", "config.json", "metrics.jsonl"):
        shutil.copy(p["unet_run"] / name, p["unet_flipped_checkpoint"])
    flip_bit(p["unet_flipped_checkpoint"] / "checkpoint.safetensors", 30)
    p["model"] = constant_model(base / "model", 0.3, classes=(0, 1, 2))
    for name in ("other_arch", "torn_weights", "torn_json"):
        p[f"model_{name}"] = Path(shutil.copytree(p["model"], base / f"model-{name}"))
    meta = json.loads((p["model"] / "model.json").read_text())
    meta["architecture"]["encoder"] = "resnet34"
    (p["model_other_arch"] / "model.json").write_text(json.dumps(meta))
    truncate(p["model_torn_weights"] / "model.safetensors")
    truncate(p["model_torn_json"] / "model.json")

    # Data roots (ROOT/ECSSD/...): four images, broken one way each. Train split: 0001, 0003.
    p["root"] = fixture_dataset(base / "root")
    broken = ("no_mask", "torn_jpeg", "flipped_jpeg", "flipped_png", "bomb", "mismatched", "single")
    for name in broken:
        p[f"root_{name}"] = fixture_dataset(base / f"root-{name}")
    images = {name: p[f"root_{name}"] / "ECSSD" / "images" for name in broken}
    masks = {name: p[f"root_{name}"] / "ECSSD" / "ground_truth_mask" for name in broken}
    (masks["no_mask"] / "0003.png").unlink()
    truncate(images["torn_jpeg"] / "0001.jpg", 0.6)
    flip_bit(images["flipped_jpeg"] / "0001.jpg", 2)  # the start-of-frame marker: no JPEG any more
    flip_bit(masks["flipped_png"] / "0002.png", 60)  # inside the image data: its CRC no longer matches
    (images["bomb"] / "0001.jpg").unlink()
    Image.new("1", (20_000, 15_000)).save(images["bomb"] / "0001.png")  # 300 megapixels in a few kilobytes
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks["mismatched"] / "0003.png")
    for stem in ("0002", "0003", "0004"):
        next(images["single"].glob(f"{stem}.*")).unlink()
        (masks["single"] / f"{stem}.png").unlink()
    p["root_wrong_layout"] = base / "root-wrong-layout"
    (p["root_wrong_layout"] / "ECSSD" / "imgs").mkdir(parents=True)

    # Files nobody here wrote: JSON of the wrong shape, a run naming code, a damaged archive.
    from directions.run_folder import write_known_direction_run

    p["model_list_json"] = Path(shutil.copytree(p["model"], base / "model-list-json"))
    (p["model_list_json"] / "model.json").write_text("[]")
    p["run_list_json"] = Path(shutil.copytree(run, base / "run-list-json"))
    (p["run_list_json"] / "directions.json").write_text("[]")
    p["run_names_code"] = write_known_direction_run(base / "run-names-code", "os:system", torch.ones(32), 6.0,
                                                    generator_options={"command": f"touch {base}/PWNED"})
    p["pipeline_list_record"] = base / "pipeline-list-record"
    p["pipeline_list_record"].mkdir()
    (p["pipeline_list_record"] / "pipeline.json").write_text("[]")
    for name, change in (("without_file", lambda shard: shard.pop("file")),
                         ("outside", lambda shard: shard.update(file="../pairs/shard-00000.safetensors"))):
        folder = Path(shutil.copytree(p["pairs"], base / f"pairs-shard-{name}"))
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest["shards"][0])
        (folder / "manifest.json").write_text(json.dumps(manifest))
        p[f"pairs_shard_{name}"] = folder
    p["classifier_int_key"] = base / "int-key.pth"
    torch.save({1: torch.zeros(1)}, p["classifier_int_key"])
    p["scenes_classifier_no_size"] = Path(shutil.copytree(REPO / "checkpoints" / "scenes-classifier",
                                                          base / "scenes-classifier-no-size"))
    meta = json.loads((p["scenes_classifier_no_size"] / "model.json").read_text())
    del meta["input_size"]
    (p["scenes_classifier_no_size"] / "model.json").write_text(json.dumps(meta))
    p["zip_bad_crc"] = base / "zip-bad-crc"  # the two published archives, stored, one byte flipped in a member
    p["zip_bad_crc"].mkdir()
    for archive, folder in (("images.zip", "images"), ("ground_truth_mask.zip", "ground_truth_mask")):
        with zipfile.ZipFile(p["zip_bad_crc"] / archive, "w", zipfile.ZIP_STORED) as handle:
            for path in sorted((p["root"] / "ECSSD" / folder).iterdir()):
                handle.write(path, f"{folder}/{path.name}")
    damaged = bytearray((p["zip_bad_crc"] / "images.zip").read_bytes())
    damaged[200] ^= 0x01  # inside the first member's bytes
    (p["zip_bad_crc"] / "images.zip").write_bytes(bytes(damaged))
    return p


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _run(server: ForkServer, case: Case, paths: dict, out: Path) -> subprocess.CompletedProcess:
    """One case as its own process, forked from a server that has the imports done already;
    ``file_limit`` caps the size of any file it writes (ulimit -f): past the cap a write fails
    with EFBIG, as it would with ENOSPC on a full disk."""
    return server.run(shlex.split(case.command.format(out=out, **paths)), REPO, case.file_limit, timeout=120)


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory):
    """Prepare the inputs, run the selected cases concurrently; (paths, results, snapshots)."""
    base = tmp_path_factory.mktemp("bad-inputs")
    paths = _prepare(base / "inputs")
    unwritable = _unwritable_folder(base)
    paths["unwritable"] = unwritable or base / "unwritable-unavailable"
    before = _snapshot(base / "inputs")
    selected = {item.callspec.params["case"].id for item in request.session.items
                if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Case)}
    selected = selected or {case.id for case in CASES}
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(base / "empty-hub"), TORCH_HOME=str(base / "torch"),
               SALIENCY_DATA=str(base / "no-data-here"), OMP_NUM_THREADS="1")
    cases = [case for case in CASES if case.id in selected and not (unwritable is None and "unwritable" in case.id)]
    outs = {case.id: base / "outs" / case.id.replace("/", "--") for case in cases}
    (base / "outs").mkdir()
    with ForkServer(env) as server, ThreadPoolExecutor(max_workers=min(4, max(2, os.cpu_count() or 1))) as pool:
        futures = {case.id: pool.submit(_run, server, case, paths, outs[case.id]) for case in cases}
        results = {name: future.result() for name, future in futures.items()}
    record = os.environ.get("SALIENCY_RECORD_ERRORS")  # a file: every case's stderr, to diff two versions
    if record:
        Path(record).write_text(json.dumps({name: result.stderr.replace(str(base), "<base>")
                                            for name, result in sorted(results.items())}, indent=1))
    yield {"paths": paths, "results": results, "outs": outs, "before": before, "after": _snapshot(base / "inputs"),
           "unwritable": unwritable}


def test_the_matrix_is_large_and_every_case_is_distinct():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)
    from pipelines.cli import cli

    # every command that takes an input (all but `generators`, which lists names)
    assert {case.id.split("/")[0] for case in CASES} >= set(cli.commands) - {"generators"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_and_leaves_nothing_to_trust(case, matrix):
    if case.id not in matrix["results"]:
        pytest.skip("no folder here refuses writes to this user")
    result = matrix["results"][case.id]
    paths = {k: str(v) for k, v in matrix["paths"].items()}
    if case.page:
        assert result.returncode == 0 and result.stderr == "", result.stderr
        html = matrix["outs"][case.id].with_suffix(".html").read_text(encoding="utf-8")
        assert all(needle.format(**paths) in html for needle in case.needles), case.needles
        return
    assert_one_line_error(result, *(needle.format(**paths) for needle in case.needles))
    _assert_nothing_to_trust(matrix["outs"][case.id])


def _assert_nothing_to_trust(out: Path) -> None:
    """No completion marker, no torn or stray temporary file; listed shards verify."""
    from saliency.core.checkpoint import load_checkpoint
    from saliency.core.artifacts import sha256_file

    for candidate in (out.with_name(out.name + ".png"), out.with_name(out.name + ".jpg")):
        assert not candidate.exists(), candidate
    if not out.exists():
        return
    files = [path for path in out.rglob("*") if path.is_file()]
    assert not [f for f in files if f.name in COMPLETE_MARKERS], files
    assert not [f for f in files if f.name.startswith(".") or ".tmp" in f.name], files
    progress = out / "progress.json"
    if progress.exists():
        listed = json.loads(progress.read_text())["shards"]
        for entry in listed:
            assert sha256_file(out / entry["file"]) == entry["sha256"]
        assert sorted(f.name for f in out.glob("shard-*")) == sorted(e["file"] for e in listed)
    else:
        assert not list(out.glob("shard-*"))
    if (out / "checkpoint.safetensors").exists():
        load_checkpoint(out / "checkpoint.safetensors")  # complete, or it would not be there


def test_no_prepared_input_changed_and_no_code_ran(matrix):
    before, after = matrix["before"], matrix["after"]
    assert sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name)) == []
    assert not (matrix["paths"]["evil"].parent / "code-ran").exists()
    unwritable = matrix["unwritable"]
    assert unwritable is None or not unwritable.exists() or not any(unwritable.iterdir())
