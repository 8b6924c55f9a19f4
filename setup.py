"""The one compiled part: the complexity model's arithmetic
(sidecar/complexity/_scoring.c). It is optional: without a C compiler the
package installs and serves with the pure-Python reference, only slower."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "sidecar.complexity._scoring",
    ["sidecar/complexity/_scoring.c", "sidecar/complexity/_reading.c"],
    depends=["sidecar/complexity/_reading.h"], optional=True)])
