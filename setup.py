"""The one compiled part: the complexity signal's serving path, reading a
prompt and scoring it (sidecar/complexity/_reading.c, _scoring.c). It is
optional: without a C compiler the package installs and serves with the
pure-Python reference, 4-8x slower on that step."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "sidecar.complexity._scoring",
    ["sidecar/complexity/_scoring.c", "sidecar/complexity/_reading.c"],
    depends=["sidecar/complexity/_reading.h"], optional=True)])
