"""The sections of ``scripts/benchmark.py``, in the order it runs them, and the workers its
fresh processes run (``scripts/benchmark.py --worker NAME JSON``).

Each section is a :class:`bench.common.Section`: ``run(ctx)`` measures and returns the entries
it adds to the results, ``render(ctx, entries)`` prints its table. Timing is
:mod:`bench.timing`'s, the tables :mod:`bench.render`'s, and every name taken from a
``functional_nn`` submodule is imported in :mod:`bench.library`.
"""

import jax

jax.config.update("jax_enable_x64", True)  # for the float64 peak; every array here names its dtype

from bench import (  # noqa: E402
    chain,
    checkers_scale,
    compile_settings,
    cost_law,
    data_parallel,
    first_result,
    large_data,
    locate_cost,
    methods,
    peak,
    symbolic,
    training,
    validate,
)

SECTIONS = (
    peak.SECTION,
    methods.SECTION,
    chain.CHAIN,
    first_result.SECTION,
    checkers_scale.SECTION,
    locate_cost.SECTION,
    validate.SECTION,
    compile_settings.SECTION,
    cost_law.COST_LAW_SECTION,
    cost_law.VECTORIZATION,
    training.SECTION,
    large_data.SECTION,
    chain.MEMORY,
    data_parallel.SECTION,
    symbolic.SECTION,
)
NAMES = tuple(s.name for s in SECTIONS)

WORKERS = {
    "first_result": first_result.worker_first_result,
    "first_check": first_result.worker_first_check,
    "checker": checkers_scale.worker_checker,
    "locate": locate_cost.worker_locate,
    "data_parallel": data_parallel.worker_data_parallel,
    "compile_setting": compile_settings.worker_compile_setting,
    "probes": compile_settings.worker_probes,
}
