"""Timing shared by every section: K back-to-back calls and one wait; interleaved rounds (A B A
B ...) and the median of per-round ratios; the wall and CPU seconds of a section; XLA's memory
accounting of a compiled call."""

from __future__ import annotations

import contextlib
import math
import resource
import statistics
import time

import jax

SUB_MS = 1e-3  # a call shorter than this is timed as K back-to-back calls and one wait
SAMPLE_S = 1e-2  # ... with K chosen so that one timing sample lasts about this long


def run_k(f, args, k: int = 1) -> float:
    """Seconds per call of ``k`` calls of ``f(*args)`` issued back to back, then one
    ``block_until_ready`` on all their outputs."""
    start = time.perf_counter()
    outs = [f(*args) for _ in range(k)]
    jax.block_until_ready(outs)
    return (time.perf_counter() - start) / k


def calls_per_sample(seconds_per_call: float) -> int:
    """K: 1 for calls of a millisecond or more, else enough calls for a ``SAMPLE_S`` sample."""
    if seconds_per_call >= SUB_MS:
        return 1
    return min(1000, math.ceil(SAMPLE_S / max(seconds_per_call, 1e-7)))


def interleaved(fs: dict, *args, pairs: int = 10, warm: bool = True, max_s: float = 10.0,
                budget_s: float = 0.5, base=None) -> dict:  # fmt: skip
    """Time the callables of ``fs`` in rounds (each round calls every one of them once, in
    order), after one warm-up call each (``warm``: ``True``, ``False`` or the names to warm
    up; an AOT-compiled call too slow to run twice needs none).

    A sub-millisecond call is timed as K back-to-back calls and one wait (:func:`run_k`).
    Rounds: ``pairs``, raised for fast calls until about ``budget_s`` of timing (at most 50),
    lowered for slow ones to fit ``max_s`` (at least 3, or ``pairs`` if smaller).

    Returns ``{"s": {name: median seconds per call}, "ratio": {name: median over rounds of
    t_name / t_first}, "k": {name: K}, "times": {name: [seconds per call, per round]},
    "rounds": int}``; ``base`` (default the first name) is the base of the ratios.
    """
    names = list(fs)
    for n in names if warm is True else warm or ():
        jax.block_until_ready(fs[n](*args))
    first = {n: run_k(fs[n], args) for n in names}  # the first sample of a slow call
    for n in names:  # K from the fastest of 6 calls: the first calls of a program are slower
        if first[n] < SUB_MS:
            first[n] = min(first[n], *(run_k(fs[n], args) for _ in range(5)))
    k = {n: calls_per_sample(first[n]) for n in names}
    round_s = sum(k[n] * first[n] for n in names)
    rounds = max(pairs, min(50, int(budget_s / max(round_s, 1e-9))))
    if rounds * round_s > max_s:
        rounds = max(min(3, pairs), int(max_s / round_s))
    times = {n: ([first[n]] if k[n] == 1 else []) for n in names}
    for r in range(rounds):
        for n in names:
            if r == 0 and k[n] == 1:
                continue  # already timed by the calibration call, in this round's order
            times[n].append(run_k(fs[n], args, k[n]))
    base_times = times[names[0] if base is None else base]
    return {
        "s": {n: statistics.median(times[n]) for n in names},
        "ratio": {
            n: statistics.median(a / b for a, b in zip(times[n], base_times, strict=True))
            for n in names
        },
        "k": k,
        "times": times,
        "rounds": rounds,
    }


def paired(f_a, f_b, *args, pairs: int = 10, **kw) -> dict:
    """Interleave ``f_a`` and ``f_b`` (A B A B ...) after a warm-up of each: the median time of
    each and the median of the per-pair ratios ``t_a / t_b`` (see :func:`interleaved`)."""
    r = interleaved({"a": f_a, "b": f_b}, *args, pairs=pairs, base="b", **kw)
    return {"a_s": r["s"]["a"], "b_s": r["s"]["b"], "ratio": r["ratio"]["a"]}


def keeping(fs: dict, last: dict) -> dict:
    """``fs`` with each call's output kept in ``last[name]``: the timed calls' results are
    shown, with no extra call to get them."""

    def keep(name, f):
        def kept(*args):
            last[name] = out = f(*args)
            return out

        return kept

    return {n: keep(n, f) for n, f in fs.items()}


def median_time(f, *args, samples: int = 5) -> float:
    """Median seconds per call of ``f(*args)`` after a warm-up (K-batched below 1 ms)."""
    return interleaved({"f": f}, *args, pairs=samples)["s"]["f"]


def memory_bytes(f, *args) -> dict:
    """XLA's own accounting of a compiled call: temporaries, arguments and outputs."""
    m = jax.jit(f).lower(*args).compile().memory_analysis()
    temp, arg, out = m.temp_size_in_bytes, m.argument_size_in_bytes, m.output_size_in_bytes
    return {"temp_bytes": temp, "peak_bytes": temp + arg + out}


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its finished children."""
    return sum(
        resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
        for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )


@contextlib.contextmanager
def section_seconds(name: str, seconds: dict, console):
    """Record the wall and CPU seconds (children included: the cold subprocesses) of the
    block in ``seconds[name]``, and print them."""
    wall, cpu0 = time.perf_counter(), cpu_seconds()
    yield
    seconds[name] = s = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu_seconds() - cpu0}
    console.print(f"[dim]\\[{name}: {s['wall_s']:.1f} s wall, {s['cpu_s']:.1f} s CPU][/]")
