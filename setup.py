"""Packaging for tvm_dse. Pins follow what TVM 0.27's stack needs on these machines."""

import re
from pathlib import Path

from setuptools import find_packages, setup

# apache-tvm asks for apache-tvm-ffi>=0.1.14.post0, but 0.1.15.post2 segfaults in tvm.ir.save_json
# (MetaSchedule databases, builder pickling, tensorize), and so does 0.1.15.post1 on AMD znver3 hosts:
# pin the release that works on every host tried.
TVM_STACK = [
    "apache-tvm==0.27.0.post1",
    "apache-tvm-ffi==0.1.14.post1",
]

setup(
    name="tvm_dse",
    version=re.search(r'__version__ = "(.+)"', Path(__file__).with_name("tvm_dse").joinpath("version.py").read_text())[1],
    description="Design-space exploration of per-node convolution strategies for CPU deployment with TVM 0.27",
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tvm_dse", "tvm_dse.*"]),
    package_data={"tvm_dse": ["thread_pool.c"], "tvm_dse.testing": ["data/*"], "tvm_dse.core_model": ["*.c"]},
    install_requires=TVM_STACK + [
        # MetaSchedule's process pools and TVM's RPC tracker need psutil and cloudpickle
        "psutil>=5.9,<8",
        "cloudpickle>=2.0,<4",
        # the CPU build gives `import xgboost` without the CUDA libraries of the plain package
        "xgboost-cpu>=2.0,<4",
        "numpy>=1.24,<3",
        # the ranges below are the ones tested with TVM 0.27's ONNX frontend
        "onnx>=1.16,<1.24",
        "scipy>=1.10,<2",
        "tornado>=6.0,<7",
        # the report's plots
        "matplotlib>=3.7,<4",
        # calibration runs the fp32 model (with its intermediate tensors as outputs) in onnxruntime
        "onnxruntime>=1.17,<1.32",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout>=2", "pytest-xdist>=3",
                 # the exported test networks (tvm_dse.testing.exports): exactly the CPU build these machines
                 # hold; any other torch spec fetches a CUDA build of several GB. onnxscript is the default
                 # exporter's.
                 "torch==2.13.0", "onnxscript>=0.5,<0.8"],
    },
    entry_points={"console_scripts": ["tvm-dse=tvm_dse.cli:main"]},
)
