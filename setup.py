from setuptools import find_packages, setup

# torchreid 0.2.5 imports tensorboard, gdown and cv2 at import time without
# declaring them, so they are declared here.
INSTALL_REQUIRES = [
    "torch",
    "torchvision",
    "torchreid==0.2.5",
    "tensorboard",
    "gdown",
    # CUHK03 in its downloaded form (cuhk-03.mat is MATLAB v7.3 = HDF5): torchreid's class reads
    # it with h5py and writes the extracted images with imageio, without declaring either.
    "h5py",
    "imageio",
    "opencv-python-headless",
    "faiss-cpu",
    "numpy",
    # the evaluation's ranking kernel (reid_srdl/evaluation/rank_kernel.py), compiled once
    # per installation and cached
    "numba>=0.60",
    "scipy",
    "tqdm",
    "matplotlib",
    "pyyaml",
    "pillow",
]

setup(
    name="reid_srdl",
    version="0.1.0",
    description="Person re-identification and image classification with self-distillation (SRDL, KD, ONE, BYOT, FRSKD)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["reid_srdl", "reid_srdl.*"]),
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    # The installed commands; `python tools/NAME.py` runs the same main (reid_srdl/cli/NAME.py).
    entry_points={
        "console_scripts": [
            "reid-train=reid_srdl.cli.train:main",
            "reid-eval=reid_srdl.cli.eval_reid:main",
            "reid-search=reid_srdl.cli.search:main",
            "reid-serve=reid_srdl.cli.serve:main",
            "reid-export=reid_srdl.cli.export:main",
            "reid-convert-checkpoint=reid_srdl.cli.convert_checkpoint:main",
            "reid-make-synthetic-market=reid_srdl.cli.make_synthetic_market:main",
            "reid-make-synthetic-reid=reid_srdl.cli.make_synthetic_reid:main",
        ]
    },
    extras_require={
        # onnx/onnxruntime: the ONNX export parity test runs in CI; the web app's tests need
        # the serve extra, httpx (FastAPI's TestClient) and selenium (the headless-browser test,
        # with Debian's chromium + chromium-driver, which .ci/run installs); timm: the timm backbones;
        # ruff and import-linter: the linters .ci/run runs (settings and layer contracts: pyproject.toml).
        "test": [
            "pytest>=7",
            "pytest-xdist",
            "onnx",
            "onnxruntime",
            "fastapi",
            "uvicorn",
            "python-multipart",
            "httpx",
            "selenium",
            "timm",
            "ruff",
            "import-linter",
            # the gallery-store contract suite runs against Milvus Lite in-process and
            # `milvus-lite server` on loopback (started by the tests themselves)
            "pymilvus>=2.6,<4",
            "milvus-lite>=3.2,<4; python_version >= '3.10'",
        ],
        # tools/serve.py: the web app over a saved gallery.
        "serve": ["fastapi", "uvicorn", "python-multipart"],
        # model.name=timm/<name>: any timm model as a re-id backbone (local weights only).
        "timm": ["timm"],
        # tools/export.py and loading exported models (ReIDSearcher.from_images("m.onnx", ...)).
        "export": ["onnx", "onnxruntime"],
        # --store gallery.db (Milvus Lite, in-process; milvus-lite 3.x needs Python >= 3.10) or
        # --store http(s)://host:port (any Milvus server; `milvus-lite server` on one machine).
        "milvus": ["pymilvus>=2.6,<4", "milvus-lite>=3.2,<4; python_version >= '3.10'"],
        # faiss-gpu replaces faiss-cpu on CUDA machines: pip uninstall faiss-cpu first.
        "gpu": ["faiss-gpu"],
    },
)
