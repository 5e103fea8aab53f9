"""setuptools shim: cffi_modules is only accepted as a setup() keyword."""
from setuptools import setup

setup(cffi_modules=["sidecar/build_core.py:ffibuilder"])
