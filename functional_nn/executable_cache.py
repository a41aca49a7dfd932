"""``check_gradients``' executables kept whole on disk between processes.

This path is kept for code that imports it (the README documented it); the code lives in
:mod:`functional_nn._compile._executables`.
"""

from functional_nn._compile._executables import (
    compile_and_store,
    disk_key,
    enable_executable_cache,
    executable_folder,
    library_names,
    load,
    repair_options,
    store,
)

__all__ = [
    "compile_and_store",
    "disk_key",
    "enable_executable_cache",
    "executable_folder",
    "library_names",
    "load",
    "repair_options",
    "store",
]
