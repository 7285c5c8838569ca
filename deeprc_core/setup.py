"""Build hook for deeprc-core's one optional C extension (the metadata is in pyproject.toml).

``deeprc_core._stack`` interleaves separate columns into batches several times faster
than numpy can. It is optional: without a C compiler and the Python headers the build
prints a warning and deeprc-core falls back to numpy (``deeprc_core.views.STACK_KERNEL``
says which one runs; ``DEEPRC_STACK_KERNEL=compiled`` makes a missing build an error).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "deeprc_core._stack",
            ["src/deeprc_core/_stack.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
