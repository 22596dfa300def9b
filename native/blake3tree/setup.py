"""Build sclib_blake3tree: one C extension over the vendored BLAKE3 C code.

On x86-64 (Linux, macOS) the SSE2/SSE4.1/AVX2/AVX-512 assembly is linked in and
chosen at run time by CPU; elsewhere the portable C code is used.

The extension is optional: without a C compiler or Python's headers, the build
prints a warning and installs the package without it, so ``pip install
./native/blake3tree`` never stops an install that lists it. sclib then hashes
each byte twice, as it does without the package; ``python -c "import
sclib_blake3tree"`` tells whether the module was built.
"""

import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

VENDOR = "vendor/"
sources = ["sclib_blake3tree.c", VENDOR + "blake3_dispatch.c", VENDOR + "blake3_portable.c"]
macros = []
x86_64 = platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"
if x86_64:
    sources += [
        VENDOR + f"blake3_{isa}_x86-64_unix.S" for isa in ("sse2", "sse41", "avx2", "avx512")
    ]
else:
    macros += [(f"BLAKE3_NO_{isa}", "1") for isa in ("SSE2", "SSE41", "AVX2", "AVX512")]


class BuildExt(build_ext):
    """Let the C compiler assemble the ``.S`` files too."""

    def build_extensions(self):
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "sclib_blake3tree",
            sources=sources,
            define_macros=macros,
            extra_compile_args=["-O3"] if sys.platform != "win32" else [],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
