"""Packaging for keras_sovit."""

import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent

CORE = [
    "keras>=3.15,<3.16",
    "tensorflow>=2.21,<2.22",
    "keras-tuner>=1.4.8,<1.5",
    "tensorflow-datasets>=4.9.10,<4.10",
    "numpy>=1.26,<2.5",
    "scipy>=1.11",
    # keras_sovit.checkpoints reads .safetensors files without torch.
    "safetensors>=0.4,<1",
    # Undeclared by the packages above, but needed at run time:
    # keras-tuner imports six, uses tensorboard on the TF backend, and
    # tfds builders import importlib_resources.
    "six",
    "tensorboard>=2.21,<2.22",
    "importlib_resources",
]
EXTRAS = {
    "test": ["pytest>=8", "hypothesis>=6"],
    "jax": ["jax==0.10.2", "jaxlib==0.10.2"],
    "cv": ["keras-cv==0.9.0"],
    "data": ["animal-mnist==0.4"],
    "plots": ["matplotlib>=3.8"],
    # The reference implementations the checkpoint loaders are tested
    # against, and the torch backend. torch 2.14.1 with torchvision 0.29.1
    # is the pair whose torchvision imports (timm needs it); an unpinned
    # torch would pull several GB of CUDA wheels from PyPI.
    "interop": [
        "torch==2.14.1",
        "torchvision==0.29.1",
        "timm>=1.0.20,<1.1",
        "transformers>=5.0,<6",
        "safetensors>=0.4,<1",
    ],
}
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setuptools.setup(
    name="keras-sovit",
    version="0.1.0",
    description=(
        "Shape-optimized Vision Transformers and compute-optimal shape "
        "search for Keras 3."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["keras_sovit", "keras_sovit.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
